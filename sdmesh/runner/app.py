"""The asyncio driver of one application: feeds the lifecycle engine, runs leaf operations.

All decisions are the engine's; this module only turns its actions into tasks and timers and
their outcomes back into events, one at a time through an inbox, so the engine never sees
two events at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.engine import Engine
from sdmesh.lifecycle.model import (
    Action,
    ApplicationEnded,
    Event,
    LeafDeploy,
    LeafDone,
    LeafEnded,
    LeafStart,
    LeafTerminate,
    Node,
    Problem,
    SetTimer,
    StartApplication,
    StateChanged,
    TerminateApplication,
    TerminationRecord,
    TimerFired,
)

log = logging.getLogger(__name__)


class ComponentError(Exception):
    """A leaf operation failed for a reason worth showing the user as it is."""


class Component(Protocol):
    """What the runner needs of a leaf implementation (a VM, a disk, a shell...)."""

    async def deploy(self) -> None: ...

    async def start(self) -> None: ...

    async def terminate(self, record: TerminationRecord) -> None:
        """Release everything; must be safe after a failed or partial deploy."""
        ...


#: Reports that a leaf ended by itself (its VM died, its script finished).
EndedCallback = Callable[[TerminationRecord], None]
#: ``factory(node, root, components, ended)``: the leaf's implementation. ``root`` is the
#: deployed ``sfConfig`` (for LAZY references) and ``components`` the leaves already made on
#: this host, by path (a VM finds its disk there).
ComponentFactory = Callable[[Node, Node, dict[str, Component], EndedCallback], Component]


class ApplicationRunner:
    """Runs one resolved ``sfConfig`` to its end."""

    def __init__(
        self,
        description: ComponentDescription,
        factory: ComponentFactory,
        on_state: Callable[[StateChanged], None] | None = None,
        on_problem: Callable[[Problem], None] | None = None,
        name: str = "sfConfig",
    ) -> None:
        self.engine = Engine(description, name)
        self.factory = factory
        self.on_state = on_state or (lambda _: None)
        self.on_problem = on_problem or (lambda problem: log.warning("%s", problem.message))
        self.components: dict[str, Component] = {}
        self.ended: TerminationRecord | None = None
        self._inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> TerminationRecord:
        """Deploy and start the application, then manage it until it ends."""
        self._loop = asyncio.get_running_loop()
        self._feed(StartApplication())
        while self.ended is None:
            self._feed(await self._inbox.get())
        for timer in self._timers:
            timer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.ended

    def terminate(self, record: TerminationRecord) -> None:
        """Ask for a clean termination (Ctrl-C, SIGTERM, a management action)."""
        self._inbox.put_nowait(TerminateApplication(record))

    def post(self, event: Event) -> None:
        self._inbox.put_nowait(event)

    # ------------------------------------------------------------------------ internals
    def _feed(self, event: Event) -> None:
        assert self._loop is not None
        for action in self.engine.handle(event, self._loop.time()):
            self._execute(action)

    def _execute(self, action: Action) -> None:
        assert self._loop is not None
        if isinstance(action, LeafDeploy):
            self._deploy(action)
        elif isinstance(action, LeafStart):
            component = self.components.get(action.path)
            if component is None:
                self.post(LeafDone(action.path, "start", "component was not deployed"))
            else:
                self._spawn(action.path, "start", component.start)
        elif isinstance(action, LeafTerminate):
            component = self.components.pop(action.path, None)
            if component is None:
                self.post(LeafDone(action.path, "terminate"))
            else:
                record = action.record
                self._spawn(action.path, "terminate", lambda: component.terminate(record))
        elif isinstance(action, SetTimer):
            event = TimerFired(action.path, action.token)
            self._timers.append(self._loop.call_at(action.at, self.post, event))
        elif isinstance(action, StateChanged):
            self.on_state(action)
        elif isinstance(action, Problem):
            self.on_problem(action)
        elif isinstance(action, ApplicationEnded):
            self.ended = action.record

    def _deploy(self, action: LeafDeploy) -> None:
        path = action.path

        def ended(record: TerminationRecord) -> None:
            self.post(LeafEnded(path, record))

        try:
            component = self.factory(action.node, self.engine.root, self.components, ended)
        except ComponentError as error:
            self.post(LeafDone(path, "deploy", str(error)))
            return
        self.components[path] = component
        self._spawn(path, "deploy", component.deploy)

    def _spawn(self, path: str, operation: str, run: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            error: str | None = None
            try:
                await run()
            except ComponentError as failure:
                error = str(failure)
            except asyncio.CancelledError:
                error = "cancelled"
                raise
            except Exception as failure:  # becomes the component's failure
                log.exception("%s of %s failed", operation, path)
                error = f"internal error during {operation}: {type(failure).__name__}: {failure}"
            finally:
                self.post(LeafDone(path, operation, error))

        task = asyncio.get_running_loop().create_task(guarded(), name=f"{operation} {path}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
