"""What each component class does with its children (shared/spec/sf-language.md §10-11).

One class per SmartFrog component class. Each mirrors the Java implementation's semantics:
when children are created (Compound in deploy, workflow containers in start), the barriers
between them, and what a child's termination means. Leaves hand their work to the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.model import (
    LeafDeploy,
    LeafStart,
    LeafTerminate,
    Node,
    State,
    TerminationRecord,
)

if TYPE_CHECKING:
    from sdmesh.lifecycle.engine import Engine

WORKFLOW: Final = "org.smartfrog.sfcore.workflow."


def _flag(node: Node, name: str, default: bool) -> bool:
    value = node.description.get(name, default)
    return value if isinstance(value, bool) else default


def _number(node: Node, name: str, default: int) -> int:
    value = node.description.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def eager_children(node: Node) -> list[tuple[str, ComponentDescription]]:
    return list(node.description.children())


class Behaviour:
    """Default hooks; subclasses override what their component class changes."""

    def deploy(self, engine: Engine, node: Node) -> None:
        engine.deployed(node)

    def start(self, engine: Engine, node: Node) -> None:
        engine.started(node)

    def terminate(self, engine: Engine, node: Node) -> None:
        engine.terminated(node)

    def on_child_deployed(self, engine: Engine, node: Node, child: Node) -> None:
        pass

    def on_child_started(self, engine: Engine, node: Node, child: Node) -> None:
        pass

    def on_child_failed(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        engine.terminate(node, record)

    def on_child_terminated(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if node.state is State.TERMINATING:
            self.continue_termination(engine, node)
        elif not child.quiet:
            engine.terminate(node, record)

    def on_timer(self, engine: Engine, node: Node) -> None:
        pass

    def continue_termination(self, engine: Engine, node: Node) -> None:
        pass


class Leaf(Behaviour):
    """A primitive component whose work the driver does (VM, disk, shell, scheduler...)."""

    def deploy(self, engine: Engine, node: Node) -> None:
        node.operation = "deploy"
        engine.emit(LeafDeploy(node.path, node))

    def start(self, engine: Engine, node: Node) -> None:
        node.operation = "start"
        engine.emit(LeafStart(node.path, node))

    def terminate(self, engine: Engine, node: Node) -> None:
        if node.operation is not None:  # finish the deploy/start in flight, then clean up
            node.terminate_after_operation = True
            return
        node.operation = "terminate"
        record = node.record or TerminationRecord.normal_end("terminated", node.path)
        engine.emit(LeafTerminate(node.path, record, node))


class NotDeployable(Behaviour):
    """A description without sfClass among deployable children: SmartFrog cannot load it."""

    def deploy(self, engine: Engine, node: Node) -> None:
        engine.deploy_failed(
            node,
            TerminationRecord.abnormal(
                f"{node.path} has no sfClass: extend a component (Compound, VirtualMachine...) "
                "or mark it 'extends DATA' if it only holds data",
                node.path,
            ),
        )


class Container(Behaviour):
    """Shared termination: children in reverse creation order, synchronously when
    ``sfSyncTerminate`` (one after another), else all at once."""

    def terminate(self, engine: Engine, node: Node) -> None:
        live = [child for child in reversed(node.children) if not child.state.ended]
        if not live:
            engine.terminated(node)
            return
        record = node.record or TerminationRecord.normal_end("terminated", node.path)
        if _flag(node, "sfSyncTerminate", False):
            node.pending = live
            engine.terminate(live[0], record, quiet=True)
        else:
            node.pending = []
            for child in live:
                engine.terminate(child, record, quiet=True)
        self.continue_termination(engine, node)

    def continue_termination(self, engine: Engine, node: Node) -> None:
        if node.pending:
            while node.pending and node.pending[0].state.ended:
                node.pending.pop(0)
            if node.pending:
                record = node.record or TerminationRecord.normal_end("terminated", node.path)
                engine.terminate(node.pending[0], record, quiet=True)
                return
        if all(child.state.ended for child in node.children):
            engine.terminated(node)


class Compound(Container):
    """Children created in deploy; deployed, then started, one after another in declaration
    order (barriers); any child's termination terminates the compound."""

    def deploy(self, engine: Engine, node: Node) -> None:
        for name, description in eager_children(node):
            engine.create_child(node, name, description)
        node.cursor = 0
        self._next(engine, node)

    def start(self, engine: Engine, node: Node) -> None:
        node.cursor = 0
        self._next(engine, node)

    def _next(self, engine: Engine, node: Node) -> None:
        if node.cursor < len(node.children):
            child = node.children[node.cursor]
            if node.state is State.DEPLOYING:
                engine.deploy(child)
            elif node.state is State.STARTING:
                engine.start(child)
            return
        if node.state is State.DEPLOYING:
            engine.deployed(node)
        elif node.state is State.STARTING:
            engine.started(node)

    def on_child_deployed(self, engine: Engine, node: Node, child: Node) -> None:
        node.cursor += 1
        self._next(engine, node)

    def on_child_started(self, engine: Engine, node: Node, child: Node) -> None:
        node.cursor += 1
        self._next(engine, node)

    def on_child_failed(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if node.state is State.DEPLOYING:
            engine.deploy_failed(node, record)  # thrown to the caller, who tears down
        elif node.state is State.STARTING:
            engine.terminate(node, record)  # a failure in start terminates the compound
        else:
            engine.terminate(node, record)


class Parallel(Container):
    """Children created in start: all deployed then all started (barriers), or with
    ``asynchCreateChild`` each created, deployed and started on its own."""

    def deploy(self, engine: Engine, node: Node) -> None:
        engine.deployed(node)

    def start(self, engine: Engine, node: Node) -> None:
        children = eager_children(node)
        if not children:
            engine.started(node)
            if _flag(node, "terminateOnEmptyDeploy", False):
                engine.terminate(node, TerminationRecord.normal_end("no children", node.path))
            return
        if _flag(node, "asynchCreateChild", False):
            node.flags.add("async")
            for name, description in children:
                engine.run_child(node, name, description)
            if node.state is State.STARTING:
                engine.started(node)
            return
        for name, description in children:
            engine.create_child(node, name, description)
        node.cursor = 0
        node.flags.add("deploying")
        self._next(engine, node)

    def _next(self, engine: Engine, node: Node) -> None:
        if node.cursor < len(node.children):
            child = node.children[node.cursor]
            if "deploying" in node.flags:
                engine.deploy(child)
            else:
                engine.start(child)
            return
        if "deploying" in node.flags:
            node.flags.discard("deploying")
            node.cursor = 0
            self._next(engine, node)
        else:
            engine.started(node)

    def on_child_deployed(self, engine: Engine, node: Node, child: Node) -> None:
        if "async" not in node.flags and node.state is State.STARTING:
            node.cursor += 1
            self._next(engine, node)

    def on_child_started(self, engine: Engine, node: Node, child: Node) -> None:
        if "async" not in node.flags and node.state is State.STARTING:
            node.cursor += 1
            self._next(engine, node)

    def on_child_failed(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if "async" not in node.flags:
            failure = TerminationRecord.abnormal(
                f"Failed to start sub-components: {record.description}", record.source
            )
            if node.state is State.STARTING:
                engine.start_failed(node, failure)
            else:
                engine.terminate(node, failure)
            return
        if _flag(node, "terminateOnAbnormalChildDeploy", True):
            engine.terminate(node, record)
        else:  # logged and forgotten: roll the failed child back on its own
            engine.terminate(child, record, quiet=True)

    def on_child_terminated(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if node.state is State.TERMINATING:
            self.continue_termination(engine, node)
            return
        if node.state is State.STARTING and "async" not in node.flags:
            # A child ended inside the deploy/start barrier: in SmartFrog the synchronous
            # sfStart of that child throws, so the Parallel's own start fails.
            engine.start_failed(
                node,
                TerminationRecord.abnormal(
                    f"Failed to start sub-components: {record.description}", record.source
                ),
            )
            return
        abnormal = not child.quiet and not record.normal
        if abnormal and _flag(node, "terminateOnAbnormalChildTermination", True):
            engine.terminate(node, record)
            return
        if node.live_children():
            return
        if _flag(node, "sfShouldTerminate", True) and node.state is State.RUNNING:
            engine.terminate(node, TerminationRecord.normal_end("all children ended", node.path))


class ActionContainer(Container):
    """A workflow container whose work is the child named ``action`` (or the first one)."""

    def action(self, node: Node) -> ComponentDescription | None:
        named = node.description.get("action")
        if isinstance(named, ComponentDescription):
            return named
        children = eager_children(node)
        return children[0][1] if children else None

    def deploy(self, engine: Engine, node: Node) -> None:
        engine.deployed(node)

    def run_action(self, engine: Engine, node: Node, name: str) -> None:
        action = self.action(node)
        if action is None:
            engine.start_failed(
                node, TerminationRecord.abnormal(f"{node.path} has no action to run", node.path)
            )
            return
        engine.run_child(node, name, action)

    def on_child_started(self, engine: Engine, node: Node, child: Node) -> None:
        if node.state is State.STARTING:
            engine.started(node)

    def on_child_failed(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        # sfCreateNewChild failed: detach and terminate the child; it then counts as an
        # abnormal end of the action.
        child.flags.add("failed-to-start")
        engine.terminate(child, record, quiet=True)

    def on_child_terminated(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if node.state is State.TERMINATING:
            self.continue_termination(engine, node)
            return
        if child.quiet and "failed-to-start" not in child.flags:
            return
        self.action_ended(engine, node, child, record)

    def action_ended(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        self.finish(engine, node, record)

    def finish(self, engine: Engine, node: Node, record: TerminationRecord) -> None:
        if node.state is State.STARTING:
            engine.started(node)
        engine.terminate(node, record)


class Sequence(Container):
    """Runs its children one after another; each must end normally for the next to run."""

    def deploy(self, engine: Engine, node: Node) -> None:
        engine.deployed(node)

    def start(self, engine: Engine, node: Node) -> None:
        node.cursor = 0
        self._run_next(engine, node)

    def _run_next(self, engine: Engine, node: Node) -> None:
        children = eager_children(node)
        if node.cursor >= len(children):
            if node.state is State.STARTING:
                engine.started(node)
            if _flag(node, "sfShouldTerminate", True):
                engine.terminate(node, TerminationRecord.normal_end("sequence done", node.path))
            return
        name, description = children[node.cursor]
        node.cursor += 1
        engine.run_child(node, name, description)

    def on_child_started(self, engine: Engine, node: Node, child: Node) -> None:
        if node.state is State.STARTING:
            engine.started(node)

    def on_child_failed(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        engine.terminate(child, record, quiet=True)
        if node.state is State.STARTING:
            engine.start_failed(node, record)
        else:
            engine.terminate(node, record)

    def on_child_terminated(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if node.state is State.TERMINATING:
            self.continue_termination(engine, node)
        elif child.quiet:
            return
        elif record.normal:
            self._run_next(engine, node)
        else:
            engine.terminate(node, record)


class Retry(ActionContainer):
    """Runs ``action``; after an abnormal end runs a fresh copy, up to ``retry`` more times."""

    def start(self, engine: Engine, node: Node) -> None:
        if _number(node, "retry", 1) < 0:
            engine.start_failed(node, TerminationRecord.abnormal("retry must be >= 0", node.path))
            return
        node.counter = 0
        self.run_action(engine, node, "running_0")

    def action_ended(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if record.normal or node.counter >= _number(node, "retry", 1):
            self.finish(engine, node, record)
            return
        node.counter += 1
        self.run_action(engine, node, f"running_{node.counter}")


class Repeat(ActionContainer):
    """Runs ``action`` again each time it ends normally, ``repeat`` runs in all (SmartFrog:
    a negative ``repeat`` runs it until it fails)."""

    def start(self, engine: Engine, node: Node) -> None:
        node.counter = 1
        self.run_action(engine, node, "running_1")

    def action_ended(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        runs = _number(node, "repeat", 1)
        if not record.normal or 0 <= runs <= node.counter:  # a negative count: forever
            self.finish(engine, node, record)
            return
        node.counter += 1
        self.run_action(engine, node, f"running_{node.counter}")


class Timeout(ActionContainer):
    """Runs ``action``; if it has not ended after ``time`` ms, ends abnormally with it."""

    expired_normally = False

    def arms_timer(self, time_ms: int) -> bool:
        return time_ms > 0  # 0 or less: no time limit

    def start(self, engine: Engine, node: Node) -> None:
        time_ms = _number(node, "time", 0)
        self.run_action(engine, node, "running")
        if self.arms_timer(time_ms) and node.state in (State.STARTING, State.RUNNING):
            engine.set_timer(node, time_ms / 1000)

    def on_timer(self, engine: Engine, node: Node) -> None:
        if self.expired_normally:
            record = TerminationRecord.normal_end("time elapsed", node.path)
        else:
            record = TerminationRecord.abnormal("timeout occurred", node.path)
        if node.state is State.STARTING:
            engine.started(node)
        engine.terminate(node, record)


class During(Timeout):
    """Like Timeout, but the time running out ends the action and itself normally."""

    expired_normally = True

    def arms_timer(self, time_ms: int) -> bool:
        return time_ms >= 0  # negative: forever


class Delay(ActionContainer):
    """Waits ``time`` ms, then runs ``action`` (if any); ends when the action ends."""

    def start(self, engine: Engine, node: Node) -> None:
        engine.started(node)
        engine.set_timer(node, max(0, _number(node, "time", 0)) / 1000)

    def on_timer(self, engine: Engine, node: Node) -> None:
        if self.action(node) is None:
            engine.terminate(node, TerminationRecord.normal_end("delay elapsed", node.path))
        else:
            self.run_action(engine, node, "running")


class Try(ActionContainer):
    """Runs ``action``; then the child named after how it ended (``normal``, ``abnormal``...),
    if there is one, and ends as that ends."""

    HANDLERS: Final = ("normal", "abnormal")

    def action(self, node: Node) -> ComponentDescription | None:
        named = node.description.get("action")
        if isinstance(named, ComponentDescription):
            return named
        for name, description in eager_children(node):
            if name not in self.HANDLERS:
                return description
        return None

    def start(self, engine: Engine, node: Node) -> None:
        self.run_action(engine, node, "action_running")

    def action_ended(
        self, engine: Engine, node: Node, child: Node, record: TerminationRecord
    ) -> None:
        if "handler" in child.flags:
            self.finish(engine, node, record)
            return
        handler = node.description.get(record.kind)
        if not isinstance(handler, ComponentDescription):
            self.finish(engine, node, record)
            return
        if node.state is State.STARTING:
            engine.started(node)
        running = engine.run_child(node, f"{record.kind}_running", handler)
        running.flags.add("handler")


class Terminator(Behaviour):
    """Terminates ``kill`` (a LAZY link to a live component), then itself."""

    def start(self, engine: Engine, node: Node) -> None:
        from sdmesh.lifecycle.runtime import ResolutionError, resolve_attribute

        kind = str(node.description.get("type", "normal"))
        description = str(node.description.get("description", "Terminator"))
        selftype = str(node.description.get("selftype", "normal"))
        engine.started(node)
        if "kill" in node.description:
            try:
                target = resolve_attribute(engine.root, node, "kill")
            except ResolutionError as error:
                engine.terminate(node, TerminationRecord.abnormal(str(error), node.path))
                return
            if isinstance(target, Node):
                engine.terminate(target, TerminationRecord(kind, description, node.path))
            else:
                engine.terminate(
                    node, TerminationRecord.abnormal("kill does not name a component", node.path)
                )
                return
        if not node.state.ended:
            engine.terminate(node, TerminationRecord(selftype, description, node.path))


BEHAVIOURS: Final[dict[str, type[Behaviour]]] = {
    "org.smartfrog.sfcore.compound.CompoundImpl": Compound,
    WORKFLOW + "combinators.Parallel": Parallel,
    WORKFLOW + "combinators.Sequence": Sequence,
    WORKFLOW + "combinators.Retry": Retry,
    WORKFLOW + "combinators.Repeat": Repeat,
    WORKFLOW + "combinators.Timeout": Timeout,
    WORKFLOW + "combinators.During": During,
    WORKFLOW + "combinators.Delay": Delay,
    WORKFLOW + "combinators.Try": Try,
    WORKFLOW + "components.Terminator": Terminator,
    "sdmesh.components.Schedulee": Compound,
}

_INSTANCES: dict[type[Behaviour], Behaviour] = {}


def behaviour_for(description: ComponentDescription) -> Behaviour:
    """The behaviour of a description's ``sfClass``; anything else with a class is a leaf."""
    sf_class = description.get("sfClass")
    if not isinstance(sf_class, str):
        kind: type[Behaviour] = NotDeployable
    else:
        kind = BEHAVIOURS.get(sf_class, Leaf)
    instance = _INSTANCES.get(kind)
    if instance is None:
        instance = _INSTANCES[kind] = kind()
    return instance
