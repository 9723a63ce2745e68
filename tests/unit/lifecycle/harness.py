"""A deterministic simulated driver for the lifecycle core.

Leaf operations complete after a per-path delay (default 1 s) or fail when told to; timers
fire at their time. Everything runs on a simulated clock, so tests see exact orderings.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from sdmesh.language import resolve_text
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
    SetTimer,
    StartApplication,
    State,
    StateChanged,
    TerminationRecord,
    TimerFired,
)

LIB = '#include "sdmesh/components.sf"\n'


def leaf(name: str, extra: str = "") -> str:
    """A leaf component (its class is not a container): deployed by the driver."""
    return f'{name} extends Prim {{ sfClass "test.Leaf"; {extra} }}'


@dataclass
class SimDriver:
    text: str
    delays: dict[str, float] = field(default_factory=dict)
    fail: dict[tuple[str, str], str] = field(default_factory=dict)
    now: float = 0.0
    log: list[tuple[float, str, str]] = field(default_factory=list)
    states: list[tuple[str, State]] = field(default_factory=list)
    ended: TerminationRecord | None = None
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.engine = Engine(resolve_text(LIB + self.text, "test.sf").root)
        self._queue: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()

    def schedule(self, at: float, event: Event) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), event))

    def run(self, until: float = 1e9, start: bool = True) -> SimDriver:
        if start:
            self.feed(StartApplication())
        while self._queue and self._queue[0][0] <= until:
            at, _, event = heapq.heappop(self._queue)
            self.now = at
            if isinstance(event, LeafDone):
                self.in_flight -= 1
            self.feed(event)
        return self

    def feed(self, event: Event) -> None:
        for action in self.engine.handle(event, self.now):
            self.execute(action)

    def execute(self, action: Action) -> None:
        if isinstance(action, LeafDeploy | LeafStart | LeafTerminate):
            operation = {LeafDeploy: "deploy", LeafStart: "start", LeafTerminate: "terminate"}[
                type(action)
            ]
            self.log.append((self.now, operation, action.path))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            delay = self.delays.get(action.path, 1.0)
            error = self.fail.get((operation, action.path))
            self.schedule(self.now + delay, LeafDone(action.path, operation, error))
        elif isinstance(action, SetTimer):
            self.schedule(action.at, TimerFired(action.path, action.token))
        elif isinstance(action, StateChanged):
            self.states.append((action.path, action.state))
        elif isinstance(action, ApplicationEnded):
            self.ended = action.record

    def kill(self, path: str, at: float, description: str = "domain died") -> None:
        self.schedule(at, LeafEnded(path, TerminationRecord.abnormal(description, path)))

    def ops(self, operation: str) -> list[str]:
        return [path.removeprefix("sfConfig:") for _, op, path in self.log if op == operation]

    def state_of(self, path: str) -> State:
        return self.engine.nodes[path].state
