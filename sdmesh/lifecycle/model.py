"""Events, actions and component nodes of the lifecycle core (shared/spec/sf-language.md §10-11).

The core is h11-style: the driver feeds events with the current time and executes the actions
it gets back. Containers (Compound, Parallel, Sequence...) are pure logic inside the core;
leaves (virtual machines, disks, shells) are delegated to the driver through ``Leaf*``
actions, whose completion comes back as :class:`LeafDone`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from sdmesh.language.values import ComponentDescription

if TYPE_CHECKING:
    from sdmesh.lifecycle.behaviours import Behaviour


class State(Enum):
    """SmartFrog's lifecycle (instantiated, initialized, started, terminated) with the
    in-progress states an asynchronous engine needs, named as the CLI reports them."""

    CREATED = "created"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    STARTING = "starting"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (State.TERMINATED, State.FAILED)


@dataclass(frozen=True)
class TerminationRecord:
    """Why a component ended: ``kind`` is "normal", "abnormal" or any other type name."""

    kind: str
    description: str
    source: str = ""

    @property
    def normal(self) -> bool:
        return self.kind == "normal"

    @classmethod
    def abnormal(cls, description: str, source: str = "") -> TerminationRecord:
        return cls("abnormal", description, source)

    @classmethod
    def normal_end(cls, description: str, source: str = "") -> TerminationRecord:
        return cls("normal", description, source)


class Node:
    """A live component: its description, its place in the tree and its progress."""

    def __init__(
        self,
        name: str,
        description: ComponentDescription,
        parent: Node | None,
        behaviour: Behaviour,
    ) -> None:
        self.name = name
        self.description = description
        self.parent = parent
        self.behaviour = behaviour
        self.children: list[Node] = []
        self.state = State.CREATED
        self.record: TerminationRecord | None = None
        #: Terminated by its parent (quietly) rather than by itself.
        self.quiet = False
        #: A leaf operation ("deploy", "start", "terminate") the driver is carrying out.
        self.operation: str | None = None
        #: Termination asked for while an operation was in flight.
        self.terminate_after_operation = False
        #: Start right after deploy (workflow containers create children with
        #: deploy + start in one step, SmartFrog's sfCreateNewChild).
        self.autostart = False
        #: Container bookkeeping: position in a sequence of child operations, counters.
        self.cursor = 0
        self.counter = 0
        self.pending: list[Node] = []
        self.timer: int | None = None
        self.flags: set[str] = set()

    @property
    def path(self) -> str:
        names: list[str] = []
        node: Node | None = self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return ":".join(reversed(names))

    @property
    def kind(self) -> str:
        """The prototype the user extended (``XenDomain``, ``DefaultXenDomain``...)."""
        extends = self.description.extends
        return extends[0] if extends else "Component"

    def child(self, name: str) -> Node | None:
        for child in self.children:
            if child.name == name:
                return child
        return None

    def live_children(self) -> list[Node]:
        return [child for child in self.children if not child.state.ended]

    def __repr__(self) -> str:
        return f"<Node {self.path} {self.state.value}>"


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True)
class StartApplication:
    """Deploy and start the whole tree."""


@dataclass(frozen=True)
class TerminateApplication:
    record: TerminationRecord


@dataclass(frozen=True)
class TerminateComponent:
    """Terminate one component from outside (a management action)."""

    path: str
    record: TerminationRecord


@dataclass(frozen=True)
class LeafDone:
    """The driver finished a leaf operation; ``error`` is set when it failed."""

    path: str
    operation: str
    error: str | None = None


@dataclass(frozen=True)
class LeafEnded:
    """A leaf ended by itself: its VM died or was destroyed outside sdmesh, its script ended."""

    path: str
    record: TerminationRecord


@dataclass(frozen=True)
class TimerFired:
    path: str
    token: int


Event = (
    StartApplication | TerminateApplication | TerminateComponent | LeafDone | LeafEnded | TimerFired
)


# ---------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class LeafDeploy:
    """Prepare a leaf (create its disk, define its domain); answer with LeafDone."""

    path: str
    node: Node = field(compare=False, repr=False)


@dataclass(frozen=True)
class LeafStart:
    """Start a leaf (boot its domain); answer with LeafDone."""

    path: str
    node: Node = field(compare=False, repr=False)


@dataclass(frozen=True)
class LeafTerminate:
    """Release everything a leaf created; answer with LeafDone (even on partial failure)."""

    path: str
    record: TerminationRecord
    node: Node = field(compare=False, repr=False)


@dataclass(frozen=True)
class SetTimer:
    path: str
    token: int
    at: float


@dataclass(frozen=True)
class StateChanged:
    """For progress display and ``--json`` event lines."""

    path: str
    kind: str
    state: State
    record: TerminationRecord | None = None


@dataclass(frozen=True)
class ApplicationEnded:
    record: TerminationRecord


@dataclass(frozen=True)
class Problem:
    """Something went wrong that does not change the lifecycle (e.g. a cleanup failed)."""

    path: str
    message: str


Action = (
    LeafDeploy | LeafStart | LeafTerminate | SetTimer | StateChanged | ApplicationEnded | Problem
)
