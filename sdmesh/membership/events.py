"""What a driver feeds the membership core: everything that happens to a node, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdmesh.membership.member import Address, Member, Meta
from sdmesh.membership.messages import PacketMessage, PushPull
from sdmesh.trust.identity import Revocation


@dataclass(frozen=True, slots=True)
class Start:
    """Arm the periodic timers. Implied by the first event of any other kind."""


@dataclass(frozen=True, slots=True)
class Preload:
    """Adopt these members as known, without disseminating or reporting them.

    A converged view for simulators and tests: replaying the join of thousands of nodes would
    only measure the join storm. Real agents join through seeds instead.
    """

    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer set by ``SetTimer`` reached its time. Stale or cancelled timers are ignored."""

    name: str


@dataclass(frozen=True, slots=True)
class Received:
    """A datagram arrived and decoded cleanly (the transport drops malformed ones)."""

    src_addr: Address
    message: PacketMessage


@dataclass(frozen=True, slots=True)
class StreamReceived:
    """Push-pull state arrived on a stream.

    For a request (``message.reply`` false) the core answers with ``ReplyStream(stream_id, ...)``;
    for the reply to our own ``OpenStream`` the driver passes the address it connected to as
    ``src_addr`` and ``stream_id`` is not used.
    """

    src_addr: Address
    message: PushPull
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """An ``OpenStream`` to ``addr`` could not connect or got no reply in time."""

    addr: Address


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """Join the mesh through these seeds: a push-pull with each of them."""

    seed_addrs: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class LeaveRequested:
    """Leave gracefully: announce it, keep gossiping briefly, then ``LeaveCompleted``."""


@dataclass(frozen=True, slots=True)
class ForceLeave:
    """An operator says the failed member ``name`` is gone for good (Serf's ``force-leave``).

    A dead member still counts against the majority the pools need until it is reaped (a
    day later); a forced leave makes every member see it as left now. Only a dead member is
    forced out: the core answers with one ``ForceLeaveResult`` saying what it did or why not.
    """

    name: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a rumor: the core stamps it with its Lamport clock and our name, stores it,
    reports ``RumorLearned`` and gossips it. ``handle`` raises ``ValueError`` (a
    ``MalformedMessage``) for a topic over 32 bytes, a key over 128, a payload over
    ``MAX_RUMOR_PAYLOAD_BYTES`` (640, sdmesh.membership.messages), or fields of the wrong
    type, before changing any state."""

    topic: str
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MetaUpdated:
    """New local metadata (capacity changed, an image arrived, ...). Bumps our incarnation."""

    meta: Meta = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Revoke:
    """The CA revoked a host certificate (``sdmesh ca revoke``, or a reloaded revocation
    list): check it, drop the member holding it and gossip the revocation (host identities,
    sdmesh/membership/identity.py). Ignored by a core without identities."""

    revocation: Revocation


Event = (
    Start
    | Preload
    | TimerFired
    | Received
    | StreamReceived
    | StreamFailed
    | JoinRequested
    | LeaveRequested
    | ForceLeave
    | MetaUpdated
    | Publish
    | Revoke
)
