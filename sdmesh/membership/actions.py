"""What the membership core asks its driver to do, and what it reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sdmesh.membership.member import Address, Member, State
from sdmesh.membership.messages import PacketMessage, PushPull, Rumor


@dataclass(frozen=True, slots=True)
class Send:
    """Send one datagram (its encoded size stays within ``max_datagram_bytes``)."""

    addr: Address
    message: PacketMessage


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Connect to ``addr``, send ``message``, and feed the reply back as ``StreamReceived``
    (or ``StreamFailed``)."""

    addr: Address
    message: PushPull


@dataclass(frozen=True, slots=True)
class ReplyStream:
    """Answer the push-pull request that arrived on stream ``stream_id``, then close it."""

    stream_id: int
    message: PushPull


@dataclass(frozen=True, slots=True)
class SetTimer:
    """(Re)arm the timer ``name`` to fire ``TimerFired(name)`` at absolute time ``at``."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Forget the timer ``name``; firing it anyway is harmless."""

    name: str


class MemberEventKind(enum.Enum):
    """What changed about a member, for the agent (shepherd choice, placement, ...)."""

    JOINED = "joined"
    """First seen alive, or alive again after being dead or gone."""
    UPDATED = "updated"
    """Still alive, with new metadata or a new address."""
    SUSPECTED = "suspected"
    RECOVERED = "recovered"
    """A suspicion was refuted."""
    FAILED = "failed"
    LEFT = "left"
    REAPED = "reaped"
    """A dead or departed member was forgotten."""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member changed state (or metadata) in our view."""

    kind: MemberEventKind
    member: Member
    old_state: State | None
    new_state: State


@dataclass(frozen=True, slots=True)
class RumorLearned:
    """Our rumor map took a newer value for ``(rumor.topic, rumor.key)``: from a datagram, a
    push-pull, or our own ``Publish`` (reported too, so the agent has one code path)."""

    rumor: Rumor


@dataclass(frozen=True, slots=True)
class JoinCompleted:
    """The first seed answered a join; we now know ``members`` members (ourselves included)."""

    addr: Address
    members: int


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """No seed of the last ``JoinRequested`` answered; the driver may retry later."""

    addrs: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class LeaveCompleted:
    """Our departure has been gossiped; the driver can close its sockets."""


class ForceLeaveOutcome(enum.Enum):
    """What a ``ForceLeave`` did; only ``LEFT`` and ``ALREADY_LEFT`` mean it is out."""

    LEFT = "left"
    """It was dead here; it is left now, and the notice is gossiped to every member."""
    ALREADY_LEFT = "already-left"
    """Nothing to do: it left (or was forced out) before."""
    UNKNOWN = "unknown"
    """No such member in our view (never seen, or already reaped)."""
    ALIVE = "alive"
    """Refused: it answers probes, so it is no failed member."""
    SUSPECT = "suspect"
    """Refused: it may still refute; its verdict comes within seconds."""
    SELF = "self"
    """Refused: that is us; a graceful ``LeaveRequested`` is the way out."""
    NOT_RUNNING = "not-running"
    """Refused: we are leaving ourselves."""

    @property
    def done(self) -> bool:
        """The member is out of our view's majority count now."""
        return self is ForceLeaveOutcome.LEFT or self is ForceLeaveOutcome.ALREADY_LEFT


@dataclass(frozen=True, slots=True)
class ForceLeaveResult:
    """The answer to a ``ForceLeave``; ``member`` is our view of it afterwards, if we know it."""

    name: str
    outcome: ForceLeaveOutcome
    member: Member | None = None


Action = (
    Send
    | OpenStream
    | ReplyStream
    | SetTimer
    | CancelTimer
    | MemberEvent
    | RumorLearned
    | JoinCompleted
    | JoinFailed
    | LeaveCompleted
    | ForceLeaveResult
)
