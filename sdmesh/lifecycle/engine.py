"""The lifecycle core: drives a component tree through deploy, start and termination.

``Engine.handle(event, now)`` returns the actions to carry out. The engine owns the generic
transitions (and refuses out-of-order ones); each component's behaviour (behaviours.py)
decides what its children's progress means, exactly as SmartFrog's ``sfDeploy``,
``sfStart``, ``sfTerminateWith`` and ``sfTerminatedWith`` do for that component class.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.behaviours import behaviour_for
from sdmesh.lifecycle.model import (
    Action,
    ApplicationEnded,
    Event,
    LeafDone,
    LeafEnded,
    Node,
    Problem,
    SetTimer,
    StartApplication,
    State,
    StateChanged,
    TerminateApplication,
    TerminateComponent,
    TerminationRecord,
    TimerFired,
)


class Engine:
    """One application: the tree deployed from a resolved ``sfConfig``."""

    def __init__(self, description: ComponentDescription, name: str = "sfConfig") -> None:
        self.root = Node(name, description, None, behaviour_for(description))
        self.nodes: dict[str, Node] = {self.root.path: self.root}
        self.ended: TerminationRecord | None = None
        self.now = 0.0
        self._actions: list[Action] = []
        self._tokens = itertools.count(1)
        # Parents hear about their children through this queue rather than by direct calls:
        # a long run of siblings finishing at once then costs no stack depth.
        self._queue: deque[Callable[[], None]] = deque()

    # ============================================================== the sans-IO interface
    def handle(self, event: Event, now: float) -> list[Action]:
        self.now = now
        self._actions = []
        if isinstance(event, StartApplication):
            self.deploy(self.root)
        elif isinstance(event, TerminateApplication):
            self.terminate(self.root, event.record)
        elif isinstance(event, TerminateComponent):
            node = self.nodes.get(event.path)
            if node is not None:
                self.terminate(node, event.record)
        elif isinstance(event, LeafDone):
            self._leaf_done(event)
        elif isinstance(event, LeafEnded):
            node = self.nodes.get(event.path)
            if node is not None and not node.state.ended:
                node.record = node.record or event.record
                self.terminate(node, event.record)
        elif isinstance(event, TimerFired):
            node = self.nodes.get(event.path)
            if node is not None and node.timer == event.token and not node.state.ended:
                node.timer = None
                node.behaviour.on_timer(self, node)
        while self._queue:
            self._queue.popleft()()
        actions, self._actions = self._actions, []
        return actions

    def emit(self, action: Action) -> None:
        self._actions.append(action)

    # ==================================================== transitions used by behaviours
    def create_child(self, parent: Node, name: str, description: ComponentDescription) -> Node:
        """SmartFrog's deploy-with: the child exists (CREATED) but is not deployed yet."""
        node = Node(name, description, parent, behaviour_for(description))
        parent.children.append(node)
        self.nodes[node.path] = node
        return node

    def run_child(self, parent: Node, name: str, description: ComponentDescription) -> Node:
        """SmartFrog's sfCreateNewChild: create, deploy and start in one go."""
        node = self.create_child(parent, name, description)
        node.autostart = True
        self.deploy(node)
        return node

    def deploy(self, node: Node) -> None:
        if node.state is not State.CREATED:
            return
        self._set_state(node, State.DEPLOYING)
        node.behaviour.deploy(self, node)

    def deployed(self, node: Node) -> None:
        if node.state is not State.DEPLOYING:
            return
        self._set_state(node, State.DEPLOYED)
        parent = node.parent
        if parent is None or node.autostart:
            self._queue.append(lambda: self.start(node))
        else:
            self._queue.append(lambda: parent.behaviour.on_child_deployed(self, parent, node))

    def deploy_failed(self, node: Node, record: TerminationRecord) -> None:
        if node.state is not State.DEPLOYING:
            return
        self._failed(node, record)

    def start(self, node: Node) -> None:
        if node.state is not State.DEPLOYED:
            return
        self._set_state(node, State.STARTING)
        node.behaviour.start(self, node)

    def started(self, node: Node) -> None:
        if node.state is not State.STARTING:
            return
        self._set_state(node, State.RUNNING)
        parent = node.parent
        if parent is not None:
            self._queue.append(lambda: parent.behaviour.on_child_started(self, parent, node))

    def start_failed(self, node: Node, record: TerminationRecord) -> None:
        if node.state is not State.STARTING:
            return
        self._failed(node, record)

    def _failed(self, node: Node, record: TerminationRecord) -> None:
        """A deploy or start failed: the caller (the parent) decides; at the top, roll back."""
        node.record = record
        parent = node.parent
        if parent is None:
            self.terminate(node, record)
        else:
            self._queue.append(lambda: parent.behaviour.on_child_failed(self, parent, node, record))

    def terminate(self, node: Node, record: TerminationRecord, quiet: bool = False) -> None:
        """sfTerminate: idempotent; ``quiet`` when the parent itself terminates the child."""
        if node.state.ended or node.state is State.TERMINATING:
            return
        if node.record is None:
            node.record = record
        node.quiet = quiet
        node.timer = None
        never_deployed = node.state is State.CREATED
        self._set_state(node, State.TERMINATING)
        if never_deployed:  # no children, no resources: nothing to release
            self.terminated(node)
            return
        node.behaviour.terminate(self, node)

    def terminated(self, node: Node) -> None:
        if node.state is not State.TERMINATING:
            return
        record = node.record or TerminationRecord.normal_end("terminated", node.path)
        # "failed" marks where a failure happened (and the application it ended); components
        # torn down because of it elsewhere are merely "terminated".
        own_failure = not record.normal and (record.source == node.path or node.parent is None)
        self._set_state(node, State.FAILED if own_failure else State.TERMINATED)
        parent = node.parent
        if parent is None:
            self.ended = record
            self.emit(ApplicationEnded(record))
        else:
            self._queue.append(
                lambda: parent.behaviour.on_child_terminated(self, parent, node, record)
            )

    def set_timer(self, node: Node, seconds: float) -> None:
        token = next(self._tokens)
        node.timer = token
        self.emit(SetTimer(node.path, token, self.now + seconds))

    # ============================================================================ leaves
    def _leaf_done(self, event: LeafDone) -> None:
        node = self.nodes.get(event.path)
        if node is None or node.operation != event.operation:
            return  # stale or unknown: never act on it
        node.operation = None
        if event.operation == "terminate":
            if event.error:
                self.emit(Problem(node.path, f"cleanup failed: {event.error}"))
            self.terminated(node)
            return
        if node.terminate_after_operation:
            node.terminate_after_operation = False
            node.behaviour.terminate(self, node)
            return
        if event.operation == "deploy":
            if event.error:
                self.deploy_failed(node, TerminationRecord.abnormal(event.error, node.path))
            else:
                self.deployed(node)
        elif event.operation == "start":
            if event.error:
                self.start_failed(node, TerminationRecord.abnormal(event.error, node.path))
            else:
                self.started(node)

    def _set_state(self, node: Node, state: State) -> None:
        node.state = state
        record = node.record if state.ended else None
        self.emit(StateChanged(node.path, node.kind, state, record))
