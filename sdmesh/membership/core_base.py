"""The state every part of the membership core shares, and the plumbing they all build on.

``CoreBase`` holds one node's protocol state (member table, broadcast queue, named timers,
probe and join bookkeeping, rumor map) and the primitives every part uses: arming timers,
sending datagrams with pending updates piggybacked, gossip rounds, state transitions, member
events and our own signed alive claim. The protocol itself is layered on top as mixins
(``core_identity``, ``core_rules``, ``core_probing``, ``core_exchange``) that
``core.Membership`` puts together behind its single ``handle`` entry point.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from sdmesh.membership.actions import (
    Action,
    CancelTimer,
    MemberEvent,
    MemberEventKind,
    Send,
    SetTimer,
)
from sdmesh.membership.broadcast import BroadcastQueue
from sdmesh.membership.config import MembershipConfig, retransmit_limit
from sdmesh.membership.health import LocalHealth
from sdmesh.membership.identity import IdentityChecker
from sdmesh.membership.member import Address, Member, Meta, State
from sdmesh.membership.messages import (
    MAX_COMPOUND_PARTS,
    Alive,
    Compound,
    PacketMessage,
    SimpleMessage,
)
from sdmesh.membership.rumors import RumorStore
from sdmesh.membership.suspicion import Suspicion
from sdmesh.membership.table import MemberTable, Record
from sdmesh.membership.wire import MAX_UINT32, MalformedMessage, expect_meta, packed_size

PROBE = "probe"
PROBE_TIMEOUT = "probe-timeout"
GOSSIP = "gossip"
PUSH_PULL = "push-pull"
RECONNECT = "reconnect"
REAP = "reap"
LEAVE = "leave"
JOIN_RETRY = "join-retry"
SUSPICION_PREFIX = "suspect:"
RELAY_PREFIX = "relay:"

COMPOUND_OVERHEAD = 5
"""msgpack bytes around the parts of a compound: outer array, tag, parts array header."""
PROBE_BYTES = 200
"""Room kept for the probe or ack an update rides on (generous: a ping-req with the longest
names and host is about 400 bytes, but that is rare and the update then waits a packet)."""


class Phase(enum.Enum):
    """Lifecycle of a core: ``LEAVING`` still gossips its departure, ``STOPPED`` ignores all."""

    NEW = "new"
    RUNNING = "running"
    LEAVING = "leaving"
    STOPPED = "stopped"


@dataclass(slots=True)
class Stats:
    """Counters for metrics and experiments."""

    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    suspicions_raised: int = 0
    """Suspicions we started ourselves after a failed probe."""
    confirmations: int = 0
    deaths_declared: int = 0
    """Suspicions that expired here."""
    refutations: int = 0
    forced_leaves: int = 0
    """Dead members we marked left on an operator's ``ForceLeave``."""
    datagrams_sent: int = 0
    streams_opened: int = 0
    pings_for_others: int = 0
    stale_acks: int = 0
    rumors_published: int = 0
    rumors_learned: int = 0
    """New values the rumor map took, our own publications included."""
    rumors_refused: int = 0
    """Rumors far above our Lamport clock (``core_rules.MAX_LTIME_STEP``): a forgery."""


@dataclass(slots=True)
class ProbeRound:
    """The probe of the current protocol period: whom, at which incarnation, what came back."""

    target: str
    incarnation: int
    seq: int
    acked: bool = False
    relays: int = 0
    nacks: int = 0


@dataclass(slots=True)
class Relay:
    """A ping we sent on behalf of ``requester``, whose ack (or nack) we owe it."""

    requester: Address
    seq: int
    nack: bool


@dataclass(slots=True)
class JoinAttempt:
    """The seeds a join still waits on, those that failed, and whether it is decided."""

    pending: dict[Address, None]
    failed: list[Address] = field(default_factory=list)
    done: bool = False


class CoreBase:
    """Shared state and primitives of the membership core (see the module docstring)."""

    def __init__(
        self,
        config: MembershipConfig,
        self_member: Member,
        rng: random.Random,
        identity: IdentityChecker | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        """Host identities (sdmesh/membership/identity.py): None trusts every key holder."""
        self.stats = Stats()
        self._rng = rng
        self._name = self_member.name
        self._addr = self_member.addr
        self._incarnation = self_member.incarnation
        self._meta: Meta = self._checked_meta(self_member.meta)
        self._phase = Phase.NEW
        self._proof = b""
        self._proof_key: tuple[int, Address, int] | None = None
        self._now = 0.0
        self._out: list[Action] = []
        self._table = MemberTable(self._name, rng)
        self._table.add(
            Record(self._name, self._addr, self._incarnation, State.ALIVE, self._meta, 0)
        )
        self._self_record().proof = self._own_proof()
        self._queue = BroadcastQueue()
        self._health = LocalHealth(config.max_local_health)
        self._suspicions: dict[str, Suspicion] = {}
        self._deadlines: dict[str, float] = {}
        self._probe: ProbeRound | None = None
        self._relays: dict[int, Relay] = {}
        self._seq = rng.randrange(MAX_UINT32)
        self._join: JoinAttempt | None = None
        self._join_seeds: tuple[Address, ...] = ()
        self._join_sync: Address | None = None
        """Who the first push-pull after a join goes to (the member that let us in)."""
        self._join_retry_delay = config.join_retry_initial
        self._rumors = RumorStore(config.max_rumors, config.rumor_ttl)
        self._update_room = config.max_datagram_bytes - COMPOUND_OVERHEAD - PROBE_BYTES
        """Largest update we gossip: it must fit next to a probe."""
        self._sized_members: tuple[Member, ...] | None = None
        self._members_bytes = 0
        """Encoded size of a push-pull of ``_sized_members`` without rumors."""

    @property
    def live_count(self) -> int:
        """Alive or suspect members, ourselves included."""
        return self._table.live_count + 1

    # ------------------------------------------------------------------ timers

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at
        self._out.append(SetTimer(name, at))

    def _disarm(self, name: str) -> None:
        if self._deadlines.pop(name, None) is not None:
            self._out.append(CancelTimer(name))

    # ------------------------------------------------------------------ datagrams and gossip

    def _send(self, addr: Address, parts: list[SimpleMessage]) -> None:
        """Send ``parts`` with as many pending updates piggybacked as the datagram holds."""
        if self._queue:
            used = COMPOUND_OVERHEAD + sum(packed_size(part.to_wire()) for part in parts)
            room = self.config.max_datagram_bytes - used
            limit = retransmit_limit(self.config.retransmit_mult, self.live_count)
            for update, _size in self._queue.take(room, limit, MAX_COMPOUND_PARTS - len(parts)):
                parts.append(update)
        if not parts:
            return
        message: PacketMessage = parts[0] if len(parts) == 1 else Compound(tuple(parts))
        self._out.append(Send(addr, message))
        self.stats.datagrams_sent += 1

    def _arm_gossip(self) -> None:
        if (
            self._queue
            and GOSSIP not in self._deadlines
            and self.config.gossip_nodes > 0
            and self._phase in (Phase.RUNNING, Phase.LEAVING)
        ):
            self._arm(GOSSIP, self._now + self.config.gossip_interval)

    def _on_gossip(self) -> None:
        """Push pending updates to a few random members (memberlist's gossip), on top of
        piggybacking, so news spreads in gossip rounds rather than probe periods."""
        cfg = self.config
        for target in self._table.gossip_targets(
            cfg.gossip_nodes, self._now, cfg.gossip_to_dead_time
        ):
            if not self._queue:
                break
            self._send(target.addr, [])

    # ------------------------------------------------------------------ state

    def _transition(self, record: Record, state: State) -> State:
        old = self._table.set_state(record, state, self._now)
        if old is State.SUSPECT and state is not State.SUSPECT:
            self._suspicions.pop(record.name, None)
            self._disarm(SUSPICION_PREFIX + record.name)
        return old

    def _emit(self, kind: MemberEventKind, record: Record, old: State | None) -> None:
        self._out.append(MemberEvent(kind, record.snapshot(), old, record.state))

    def _self_record(self) -> Record:
        record = self._table.get(self._name)
        assert record is not None
        return record

    def _checked_meta(self, meta: Meta) -> Meta:
        """Our metadata, refused (``MalformedMessage``, a ``ValueError``) unless peers would
        accept it and its alive message fits a datagram next to a probe."""
        meta = dict(expect_meta(meta))
        alive = Alive(self._name, MAX_UINT32, self._addr, meta)
        room = self.config.max_datagram_bytes - COMPOUND_OVERHEAD - PROBE_BYTES
        if self.identity is not None:
            room -= self.identity.proof_size
        if packed_size(alive.to_wire()) > room:
            raise MalformedMessage(f"metadata does not fit a {room}-byte datagram budget")
        return meta

    def _alive_message(self) -> Alive:
        return Alive(self._name, self._incarnation, self._addr, self._meta, self._own_proof())

    def _own_proof(self) -> bytes:
        """Our signature on our current alive claim, made once per incarnation."""
        if self.identity is None:
            return b""
        key = (self._incarnation, self._addr, id(self._meta))
        if self._proof_key != key:
            self._proof = self.identity.prove_alive(self._incarnation, self._addr, self._meta)
            self._proof_key = key
        return self._proof
