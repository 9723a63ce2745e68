"""The sans-IO membership core: SWIM with suspicion and incarnations, plus Lifeguard.

``Membership.handle(event, now)`` is the only entry point: events (datagrams, stream payloads,
timers, requests from the agent) and the current time go in, a list of actions comes out
(datagrams and streams to send, timers to arm, member events to report). The core never reads a
clock, never touches a socket and draws every random choice from the injected ``Random``, so a
driver can be an asyncio agent or a discrete-event simulator of thousands of nodes.

The protocol is SWIM (Das, Gupta, Motivala, DSN 2002): each protocol period a member probes one
other member directly, then indirectly through ``indirect_checks`` relays; a member that
answers neither is *suspected*, not declared dead, and has a suspicion timeout to refute by
raising its incarnation. Updates ride piggybacked on probe traffic (and on periodic gossip, as
in memberlist), and a periodic push-pull of full state over a stream repairs whatever gossip
missed. Lifeguard (Dadgar, Phillips, Currey, 2018) adds three defences against a *slow local
node* causing false positives: the local health multiplier (fed by nacks from relays, which
tell a dead target from our own lossy link), suspicion timeouts that start long and shrink with
independent confirmations, and the buddy system (a suspected member learns it directly from the
next probe it receives).

Beyond the papers: a member that receives a suspicion it has already refuted answers the
sender directly (the sender evidently missed the refutation), and dead members are retried
with a push-pull now and then, so the two sides of a healed partition find each other again.

The same machinery carries *rumors* (``Publish``, ``RumorLearned``): application records kept
in a last-writer-wins map under a Lamport clock, gossiped like member updates and exchanged
whole by push-pull, so a member that was away when one was published still learns it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from sdmesh.membership.actions import (
    Action,
    CancelTimer,
    ForceLeaveOutcome,
    ForceLeaveResult,
    JoinCompleted,
    JoinFailed,
    LeaveCompleted,
    MemberEvent,
    MemberEventKind,
    OpenStream,
    ReplyStream,
    RumorLearned,
    Send,
    SetTimer,
)
from sdmesh.membership.broadcast import BroadcastQueue
from sdmesh.membership.config import (
    MembershipConfig,
    push_pull_period,
    retransmit_limit,
    suspicion_bounds,
)
from sdmesh.membership.events import (
    Event,
    ForceLeave,
    JoinRequested,
    LeaveRequested,
    MetaUpdated,
    Preload,
    Publish,
    Received,
    Revoke,
    Start,
    StreamFailed,
    StreamReceived,
    TimerFired,
)
from sdmesh.membership.health import LocalHealth
from sdmesh.membership.identity import IdentityChecker
from sdmesh.membership.member import Address, Member, Meta, State
from sdmesh.membership.messages import (
    MAX_COMPOUND_PARTS,
    Ack,
    Alive,
    Compound,
    Dead,
    Nack,
    PacketMessage,
    Ping,
    PingReq,
    PushPull,
    Rumor,
    RumorUpdate,
    SimpleMessage,
    Suspect,
    checked_rumor,
)
from sdmesh.membership.rumors import RumorStore, age_since
from sdmesh.membership.suspicion import Suspicion
from sdmesh.membership.table import MemberTable, Record
from sdmesh.membership.wire import (
    MAX_UINT32,
    MAX_UINT64,
    MalformedMessage,
    expect_meta,
    packed_size,
)

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
RUMOR_LIST_OVERHEAD = 5
"""msgpack bytes of the rumor list header in a push-pull (at most an array32 header)."""
REGOSSIP_PER_MERGE = 16
"""Rumors new to us in one push-pull that we also gossip, newest first. A few are news our
side of a healed partition missed and gossip spreads them fastest; a flood of them (a node
back from a long absence) is for anti-entropy, not for the broadcast queue it would clog."""


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


@dataclass(slots=True)
class _Probe:
    target: str
    incarnation: int
    seq: int
    acked: bool = False
    relays: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester: Address
    seq: int
    nack: bool


@dataclass(slots=True)
class _JoinAttempt:
    pending: dict[Address, None]
    failed: list[Address] = field(default_factory=list)
    done: bool = False


class Membership:
    """One node's membership protocol state machine.

    Driver contract: feed every event with the current time of a monotonic clock, in seconds
    (``loop.time()`` in asyncio), and execute the returned actions in order. Timers are named
    and absolute on that clock; ``SetTimer`` replaces an armed timer of the same name, and the
    core ignores a ``TimerFired`` that is early, stale or cancelled, so a driver need not be
    exact about cancellation. Datagrams go through the transport's ``decode_packet`` and
    streams through ``decode_stream`` before they become events.
    """

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
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = rng.randrange(MAX_UINT32)
        self._join: _JoinAttempt | None = None
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

    # ------------------------------------------------------------------ queries

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> Address:
        return self._addr

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def local_health(self) -> int:
        """Lifeguard's LHM score, 0 (healthy) to ``config.max_local_health``."""
        return self._health.score

    @property
    def pending_broadcasts(self) -> int:
        return len(self._queue)

    @property
    def live_count(self) -> int:
        """Alive or suspect members, ourselves included."""
        return self._table.live_count + 1

    def member(self, name: str) -> Member | None:
        record = self._table.get(name)
        return record.snapshot() if record is not None else None

    def state_of(self, name: str) -> State | None:
        record = self._table.get(name)
        return record.state if record is not None else None

    def members(self) -> list[Member]:
        """Every member we remember, ourselves included, in any state."""
        return [record.snapshot() for record in self._table.records()]

    def live_members(self) -> list[Member]:
        """Alive and suspect members, ourselves included."""
        return [r.snapshot() for r in self._table.records() if r.state.live]

    def rumors(self, topic: str | None = None) -> list[Rumor]:
        """The current value of every rumor we hold (of ``topic`` only, if given), sorted by
        topic and key. Expired rumors linger up to ``reap_interval`` here."""
        return self._rumors.rumors(topic)

    def rumor(self, topic: str, key: str) -> Rumor | None:
        return self._rumors.get(topic, key)

    @property
    def rumor_clock(self) -> int:
        """Our Lamport clock: the highest ``ltime`` seen; our next publication gets one more."""
        return self._rumors.clock

    # ------------------------------------------------------------------ entry point

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event at time ``now``; return what the driver must do."""
        # Refuse a bad publication before anything changes, so the caller can carry on.
        published = self._checked_publish(event) if isinstance(event, Publish) else None
        if self._phase is Phase.STOPPED:
            return []
        self._now = now
        out: list[Action] = []
        self._out = out
        if self._phase is Phase.NEW:
            self._start()
        if isinstance(event, Received):
            self._on_packet(event.src_addr, event.message)
        elif isinstance(event, TimerFired):
            self._on_timer(event.name)
        elif isinstance(event, StreamReceived):
            self._on_stream(event.src_addr, event.message, event.stream_id)
        elif isinstance(event, StreamFailed):
            self._on_stream_failed(event.addr)
        elif isinstance(event, JoinRequested):
            self._on_join(event.seed_addrs)
        elif isinstance(event, LeaveRequested):
            self._on_leave()
        elif isinstance(event, ForceLeave):
            self._on_force_leave(event.name)
        elif isinstance(event, MetaUpdated):
            self._on_meta(event.meta)
        elif isinstance(event, Preload):
            self._on_preload(event.members)
        elif published is not None:
            self._on_publish(published)
        elif isinstance(event, Revoke):
            self._on_revoke(event)
        elif not isinstance(event, Start):  # pragma: no cover - exhaustive above
            raise TypeError(f"unknown event {event!r}")
        self._arm_gossip()
        return out

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        cfg = self.config
        self._phase = Phase.RUNNING
        first_probe = cfg.probe_interval
        if cfg.randomize_probe_phase:
            first_probe = self._rng.uniform(0.0, cfg.probe_interval)
        self._arm(PROBE, self._now + first_probe)
        self._arm(PUSH_PULL, self._now + self._rng.uniform(0.5, 1.0) * cfg.push_pull_interval)
        self._arm(RECONNECT, self._now + self._rng.uniform(0.5, 1.5) * cfg.reconnect_interval)
        self._arm(REAP, self._now + cfg.reap_interval)
        self._queue.enqueue(self._name, self._alive_message())

    def _on_preload(self, members: tuple[Member, ...]) -> None:
        fresh = [
            Record(m.name, m.addr, m.incarnation, m.state, m.meta, self._now, m)
            for m in members
            if m.name != self._name and self._table.get(m.name) is None
        ]
        self._table.add_many(fresh)

    def _on_join(self, seeds: tuple[Address, ...], *, retry: bool = False) -> None:
        if not retry:
            self._join_seeds = seeds
            self._join_retry_delay = self.config.join_retry_initial
            self._disarm(JOIN_RETRY)
        targets = [addr for addr in dict.fromkeys(seeds) if addr != self._addr]
        self._join = _JoinAttempt(pending=dict.fromkeys(targets))
        if not targets:
            self._join.done = True
            self._out.append(JoinFailed(tuple(seeds)))
            return
        for addr in targets:
            self._open_push_pull(addr, join=True)

    def _on_leave(self) -> None:
        """Graceful leave: a ``left`` notice with a raised incarnation, so it beats any alive
        claim already in flight, pushed at once and then gossiped for ``leave_timeout``."""
        if self._phase is not Phase.RUNNING:
            return
        self._phase = Phase.LEAVING
        self._incarnation += 1
        me = self._self_record()
        me.incarnation = self._incarnation
        proof = self.identity.prove_leave(self._incarnation) if self.identity else b""
        me.proof = proof
        self._table.set_state(me, State.LEFT, self._now)
        self._queue.enqueue(
            self._name, Dead(self._name, self._incarnation, self._name, left=True, proof=proof)
        )
        self._probe = None
        for name in (PROBE, PROBE_TIMEOUT, PUSH_PULL, RECONNECT, REAP, JOIN_RETRY):
            self._disarm(name)
        for target in self._table.sample(self.config.gossip_nodes, alive_only=False):
            self._send(target.addr, [])
        self._arm(LEAVE, self._now + self.config.leave_timeout)

    def _on_force_leave(self, name: str) -> None:
        """Serf's force-leave: mark a dead member left, and gossip that as a ``left`` notice
        at its own incarnation, from us. Every member then counts it as gone (the majority
        rule stops waiting for it) and stops trying to reconnect to it. The incarnation is
        not raised: only the member may do that, so if it was alive after all its next word
        (a refutation of the notice, when it reaches it) beats ours and it rejoins."""
        record = self._table.get(name)
        if self._phase is not Phase.RUNNING:
            outcome = ForceLeaveOutcome.NOT_RUNNING
        elif name == self._name:
            outcome = ForceLeaveOutcome.SELF
        elif record is None:
            outcome = ForceLeaveOutcome.UNKNOWN
        elif record.state is State.LEFT:
            outcome = ForceLeaveOutcome.ALREADY_LEFT
        elif record.state is State.ALIVE:
            outcome = ForceLeaveOutcome.ALIVE
        elif record.state is State.SUSPECT:
            outcome = ForceLeaveOutcome.SUSPECT
        else:
            self._on_dead(Dead(name, record.incarnation, self._name, left=True))
            self.stats.forced_leaves += 1
            outcome = ForceLeaveOutcome.LEFT
        member = record.snapshot() if record is not None else None
        self._out.append(ForceLeaveResult(name, outcome, member))

    def _finish_leave(self) -> None:
        self._phase = Phase.STOPPED
        for name in list(self._deadlines):
            self._disarm(name)
        self._out.append(LeaveCompleted())

    def _on_meta(self, meta: Meta) -> None:
        """New metadata travels as an alive message with a raised incarnation."""
        if self._phase is not Phase.RUNNING:
            return
        self._meta = self._checked_meta(meta)
        self._incarnation += 1
        me = self._self_record()
        me.incarnation = self._incarnation
        me.meta = self._meta
        me.proof = self._own_proof()
        self._table.changed(me)
        self._queue.enqueue(self._name, self._alive_message())

    # ------------------------------------------------------------------ timers

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at
        self._out.append(SetTimer(name, at))

    def _disarm(self, name: str) -> None:
        if self._deadlines.pop(name, None) is not None:
            self._out.append(CancelTimer(name))

    def _on_timer(self, name: str) -> None:
        deadline = self._deadlines.get(name)
        if deadline is None or self._now < deadline:
            return
        del self._deadlines[name]
        if name == PROBE:
            self._on_probe_tick()
        elif name == PROBE_TIMEOUT:
            self._on_probe_timeout()
        elif name == GOSSIP:
            self._on_gossip()
        elif name.startswith(SUSPICION_PREFIX):
            self._on_suspicion_timeout(name[len(SUSPICION_PREFIX) :])
        elif name.startswith(RELAY_PREFIX):
            self._on_relay_timeout(int(name[len(RELAY_PREFIX) :]))
        elif name == PUSH_PULL:
            self._on_push_pull_timer()
        elif name == RECONNECT:
            self._on_reconnect_timer()
        elif name == REAP:
            self._on_reap_timer()
        elif name == LEAVE:
            self._finish_leave()
        elif name == JOIN_RETRY:
            self._on_join_retry()

    # ------------------------------------------------------------------ probing

    def _on_probe_tick(self) -> None:
        """Close the previous protocol period, then probe the next member in round-robin."""
        self._finish_probe()
        multiplier = self._health.multiplier
        self._arm(PROBE, self._now + self.config.probe_interval * multiplier)
        target = self._table.next_probe_target()
        if target is None:
            return
        self._seq = (self._seq + 1) & MAX_UINT32
        self._probe = _Probe(target.name, target.incarnation, self._seq)
        self.stats.probes += 1
        parts: list[SimpleMessage] = []
        if target.state is State.SUSPECT:
            # Lifeguard's buddy system: tell the suspect first, so it can refute at once.
            parts.append(Suspect(target.name, target.incarnation, self._name))
        parts.append(Ping(self._seq, target.name))
        self._send(target.addr, parts)
        self._arm(PROBE_TIMEOUT, self._now + self.config.probe_timeout * multiplier)

    def _on_probe_timeout(self) -> None:
        """No direct ack in time: ask relays, and expect each to ack or nack."""
        probe = self._probe
        if probe is None or probe.acked:
            return
        target = self._table.get(probe.target)
        if target is None or not target.state.live:
            return
        relays = self._table.sample(
            self.config.indirect_checks, alive_only=True, exclude=probe.target
        )
        request = PingReq(probe.seq, probe.target, target.addr, nack=True)
        for relay in relays:
            self._send(relay.addr, [request])
        probe.relays = len(relays)
        self.stats.indirect_probes += 1

    def _finish_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        self._disarm(PROBE_TIMEOUT)
        target = self._table.get(probe.target)
        if target is None or not target.state.live:
            return
        # Lifeguard: missing nacks mean our own links are the likelier culprit.
        missing = probe.relays - probe.nacks if probe.relays else 1
        self._health.apply(max(0, missing))
        self.stats.probe_failures += 1
        was_alive = target.state is State.ALIVE
        self._on_suspect(Suspect(probe.target, probe.incarnation, self._name))
        if was_alive and target.state is State.SUSPECT:
            self.stats.suspicions_raised += 1

    def _on_ack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                self._health.apply(-1)
                self._disarm(PROBE_TIMEOUT)
            return
        relay = self._relays.pop(seq, None)
        if relay is None:
            self.stats.stale_acks += 1
            return
        self._disarm(RELAY_PREFIX + str(seq))
        self._send(relay.requester, [Ack(relay.seq)])

    def _on_nack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.nacks += 1

    def _on_ping_req(self, src: Address, request: PingReq) -> None:
        """Probe ``target`` for ``src``; forward the ack, or nack when it stays silent."""
        if request.target == self._name:
            self._send(src, [Ack(request.seq)])
            return
        self._seq = (self._seq + 1) & MAX_UINT32
        self._relays[self._seq] = _Relay(src, request.seq, request.nack)
        self._send(request.target_addr, [Ping(self._seq, request.target)])
        deadline = self.config.probe_timeout * self.config.relay_nack_fraction
        self._arm(RELAY_PREFIX + str(self._seq), self._now + deadline)

    def _on_relay_timeout(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send(relay.requester, [Nack(relay.seq)])

    # ------------------------------------------------------------------ datagrams

    def _on_packet(self, src: Address, message: PacketMessage) -> None:
        if self.identity is not None and self.identity.blocked(src):
            return
        if isinstance(message, Compound):
            for part in message.messages:
                self._on_simple(src, part)
        else:
            self._on_simple(src, message)

    def _on_simple(self, src: Address, message: SimpleMessage) -> None:
        if isinstance(message, Ping):
            if message.target == self._name:
                self._send(src, [Ack(message.seq)])
            else:
                self.stats.pings_for_others += 1
        elif isinstance(message, Ack):
            self._on_ack(message.seq)
        elif isinstance(message, Alive):
            self._on_alive(message)
        elif isinstance(message, Suspect):
            self._on_suspect(message, src)
        elif isinstance(message, Dead):
            self._on_dead(message, src)
        elif isinstance(message, PingReq):
            self._on_ping_req(src, message)
        elif isinstance(message, RumorUpdate):
            published = self._now - message.age
            if self._learn(message.rumor, published):
                self._spread(message.rumor, published)
        else:
            self._on_nack(message.seq)

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

    # ------------------------------------------------------------------ state rules

    def _on_alive(self, message: Alive) -> None:
        if message.name == self._name:
            self._alive_about_me(message)
            return
        record = self._table.get(message.name)
        if (record is None or message.incarnation > record.incarnation) and not self._signed(
            message
        ):
            return
        if record is None:
            record = Record(
                message.name,
                message.addr,
                message.incarnation,
                State.ALIVE,
                message.meta,
                self._now,
                proof=message.proof,
            )
            self._table.add(record)
            self._emit(MemberEventKind.JOINED, record, None)
            self._queue.enqueue(message.name, message)
            return
        if message.incarnation <= record.incarnation:
            return
        # A higher incarnation is the member's own word: accept a new address too (restart).
        changed = record.addr != message.addr or record.meta != message.meta
        record.incarnation = message.incarnation
        record.addr = message.addr
        record.meta = message.meta
        record.proof = message.proof
        old = self._transition(record, State.ALIVE)
        if old is State.SUSPECT:
            self._emit(MemberEventKind.RECOVERED, record, old)
        elif old is not State.ALIVE:
            self._emit(MemberEventKind.JOINED, record, old)
        elif changed:
            self._emit(MemberEventKind.UPDATED, record, old)
        self._queue.enqueue(message.name, message)

    def _on_suspect(self, message: Suspect, src: Address | None = None) -> None:
        if message.name == self._name:
            self._claim_about_me(message.incarnation, src)
            return
        record = self._table.get(message.name)
        if record is None or not record.state.live or message.incarnation < record.incarnation:
            return
        if self.identity is not None and message.incarnation > record.incarnation:
            message = Suspect(message.name, record.incarnation, message.sender)  # see _vetted_dead
        if record.state is State.SUSPECT and message.incarnation == record.incarnation:
            suspicion = self._suspicions.get(message.name)
            if suspicion is not None and suspicion.confirm(message.sender):
                self.stats.confirmations += 1
                self._arm(SUSPICION_PREFIX + message.name, max(self._now, suspicion.deadline))
                self._queue.enqueue(message.name, message)
            return
        # A new suspicion: of an alive member, or of one that refuted an earlier suspicion and
        # is suspected again (its clock restarts: the old one was answered).
        record.incarnation = message.incarnation
        old = self._transition(record, State.SUSPECT)
        members = self.live_count
        expected = self.config.suspicion_confirmations
        if members - 2 < expected:
            expected = 0  # too few members for that many independent confirmations
        low, high = suspicion_bounds(self.config, members)
        suspicion = Suspicion(self._now, low, high, expected, message.sender)
        self._suspicions[message.name] = suspicion
        self._arm(SUSPICION_PREFIX + message.name, suspicion.deadline)
        if old is State.ALIVE:
            self._emit(MemberEventKind.SUSPECTED, record, old)
        self._queue.enqueue(message.name, message)

    def _on_suspicion_timeout(self, name: str) -> None:
        record = self._table.get(name)
        suspicion = self._suspicions.get(name)
        if record is None or suspicion is None or record.state is not State.SUSPECT:
            return
        if self._now < suspicion.deadline:
            self._arm(SUSPICION_PREFIX + name, suspicion.deadline)
            return
        self.stats.deaths_declared += 1
        self._on_dead(Dead(name, record.incarnation, self._name))

    def _on_dead(self, message: Dead, src: Address | None = None) -> None:
        if message.name == self._name:
            self._claim_about_me(message.incarnation, src)
            return
        record = self._table.get(message.name)
        if record is None or message.incarnation < record.incarnation:
            return
        if record.state is State.LEFT or (record.state is State.DEAD and not message.left):
            return
        if self.identity is not None:
            vetted = self._vetted_dead(message, record)
            if vetted is None:
                return
            message = vetted
        if message.left:
            record.proof = message.proof
        record.incarnation = message.incarnation
        new = State.LEFT if message.left else State.DEAD
        old = self._transition(record, new)
        kind = MemberEventKind.LEFT if message.left else MemberEventKind.FAILED
        self._emit(kind, record, old)
        self._queue.enqueue(message.name, message)

    def _alive_about_me(self, message: Alive) -> None:
        """Someone vouches for us: fine if it matches what we say, otherwise it is stale news
        (say, from before a restart) that must be overridden with a higher incarnation."""
        if message.incarnation < self._incarnation:
            return
        if (
            message.incarnation == self._incarnation
            and message.addr == self._addr
            and message.meta == self._meta
        ):
            return
        self._refute(message.incarnation)

    def _claim_about_me(self, incarnation: int, src: Address | None) -> None:
        """Someone says we are suspect, dead or gone. If that is news, refute it. If we already
        refuted it, ``src`` is still spreading the stale claim, which means it missed our
        refutation: tell it directly rather than hope the epidemic reaches it in time."""
        if self._phase is not Phase.RUNNING:
            return
        if self.identity is not None:  # see _vetted_dead: only we raise our incarnation
            incarnation = min(incarnation, self._incarnation)
        if incarnation >= self._incarnation:
            self._refute(incarnation)
        elif src is not None:
            self._send(src, [self._alive_message()])

    def _refute(self, incarnation: int) -> None:
        """Override a claim about us by announcing ourselves alive with a higher incarnation.

        Being suspected hints that we are the slow one, so local health worsens too.
        """
        if self._phase is not Phase.RUNNING:
            return
        self._incarnation = max(self._incarnation, incarnation) + 1
        me = self._self_record()
        me.incarnation = self._incarnation
        me.proof = self._own_proof()
        self._table.changed(me)
        self._queue.enqueue(self._name, self._alive_message())
        self._health.apply(1)
        self.stats.refutations += 1

    def _transition(self, record: Record, state: State) -> State:
        old = self._table.set_state(record, state, self._now)
        if old is State.SUSPECT and state is not State.SUSPECT:
            self._suspicions.pop(record.name, None)
            self._disarm(SUSPICION_PREFIX + record.name)
        return old

    # ------------------------------------------------------------------ push-pull

    def _open_push_pull(self, addr: Address, *, join: bool) -> None:
        self._out.append(OpenStream(addr, self._push_pull(join=join, reply=False)))
        self.stats.streams_opened += 1

    def _push_pull(self, *, join: bool, reply: bool) -> PushPull:
        """Our full state: every member, and as many rumors as the stream budget leaves room
        for, newest first (the members take precedence: they are the protocol)."""
        members = self._table.snapshot()
        if not self._rumors:
            return PushPull(self._name, join, reply, members)
        if members is not self._sized_members:
            self._sized_members = members
            self._members_bytes = packed_size(PushPull(self._name, join, reply, members).to_wire())
        room = self.config.max_stream_bytes - self._members_bytes - RUMOR_LIST_OVERHEAD
        updates: list[RumorUpdate] = []
        for held in self._rumors.newest_first(self._now):
            room -= held.size
            if room < 0:
                break
            updates.append(RumorUpdate(held.rumor, age_since(held.published, self._now)))
        return PushPull(self._name, join, reply, members, tuple(updates))

    def _on_stream(self, src: Address, message: PushPull, stream_id: int) -> None:
        if not message.reply:
            self._merge(message)
            self._merge_rumors(message.rumors, spread=True)
            reply = self._push_pull(join=message.join, reply=True)
            self._out.append(ReplyStream(stream_id, reply))
            return
        incarnation = self._incarnation
        wrong_about_us = self._merge(message) or self._incarnation > incarnation
        # A join reply holds what the mesh already knows: nothing there is news to gossip.
        self._merge_rumors(message.rumors, spread=not message.join)
        join = self._join
        if message.join and join is not None and src in join.pending:
            del join.pending[src]
            if not join.done:
                join.done = True
                self._out.append(JoinCompleted(src, len(self._table)))
                # Members joining at the same moment (a rack booting) got the seed's state
                # before it knew of the others; one early anti-entropy round with that seed
                # (which has heard of them by then) brings them in at once, instead of one
                # gossip datagram at a time.
                delay = self._rng.uniform(0.5, 1.5) * self.config.join_sync_delay
                self._join_sync = src
                self._arm(PUSH_PULL, self._now + delay)
        if wrong_about_us and self._phase is Phase.RUNNING:
            # The peer held stale news about us (we restarted, possibly elsewhere, or it lost
            # sight of us during a partition): push once more so it sees the refutation now.
            self._open_push_pull(src, join=False)

    def _on_stream_failed(self, addr: Address) -> None:
        join = self._join
        if join is None or addr not in join.pending:
            return
        del join.pending[addr]
        join.failed.append(addr)
        if not join.pending and not join.done:
            join.done = True
            self._out.append(JoinFailed(tuple(join.failed)))
            self._schedule_join_retry()

    def _schedule_join_retry(self) -> None:
        """Serf's retry-join: hosts boot in any order, so a member whose seeds were all down
        tries them again, backing off, for as long as it knows no one else. Once anyone has
        reached us (a seed that came up, or a peer that knew our address), gossip takes over."""
        if self._phase is not Phase.RUNNING or not self._join_seeds or self.live_count > 1:
            return
        delay = self._join_retry_delay * self._rng.uniform(0.8, 1.2)
        self._join_retry_delay = min(self._join_retry_delay * 2, self.config.join_retry_max)
        self._arm(JOIN_RETRY, self._now + delay)

    def _on_join_retry(self) -> None:
        if self._phase is Phase.RUNNING and self.live_count <= 1:
            self._on_join(self._join_seeds, retry=True)

    def _merge(self, message: PushPull) -> bool:
        """Merge a remote full state; True if the peer holds us for anything but alive.

        A remote *dead* verdict only makes us suspect the member (memberlist's rule): it lets
        the member refute before we believe it.
        """
        wrong_about_us = False
        for member in message.members:
            if member.name == self._name:
                wrong_about_us = member.state is not State.ALIVE
            record = self._table.get(member.name)
            if (
                record is not None
                and record.incarnation == member.incarnation
                and record.state is member.state
                and member.name != self._name
            ):
                continue
            if member.state is State.ALIVE:
                self._on_alive(
                    Alive(member.name, member.incarnation, member.addr, member.meta, member.proof)
                )
            elif member.state is State.LEFT:
                self._on_dead(
                    Dead(member.name, member.incarnation, member.name, True, member.proof)
                )
            else:
                self._on_suspect(Suspect(member.name, member.incarnation, message.sender))
        return wrong_about_us

    def _merge_rumors(self, updates: tuple[RumorUpdate, ...], *, spread: bool) -> None:
        learned: list[tuple[Rumor, float]] = []
        for update in updates:
            published = self._now - update.age
            if self._learn(update.rumor, published):
                learned.append((update.rumor, published))
        if spread:
            learned.sort(key=lambda pair: pair[0].rank, reverse=True)
            for rumor, published in learned[:REGOSSIP_PER_MERGE]:
                self._spread(rumor, published)

    def _on_push_pull_timer(self) -> None:
        period = push_pull_period(self.config.push_pull_interval, self.live_count)
        self._arm(PUSH_PULL, self._now + period)
        sync, self._join_sync = self._join_sync, None
        if sync is not None:
            self._open_push_pull(sync, join=False)
            return
        peers = self._table.sample(1, alive_only=True)
        if peers:
            self._open_push_pull(peers[0].addr, join=False)

    def _on_reconnect_timer(self) -> None:
        """Serf's reconnect: after a partition both sides hold each other dead and stop
        talking; one push-pull across makes each side learn and refute the other's verdict.

        Each member tries with probability dead/live, so a mesh that lost a few hosts makes
        about one attempt per interval and per dead host overall, while the two halves of a
        split mesh (or an isolated host) try every interval.
        """
        self._arm(RECONNECT, self._now + self.config.reconnect_interval)
        dead = self._table.dead_names()
        if not dead or self._rng.random() >= len(dead) / self.live_count:
            return
        record = self._table.get(dead[self._rng.randrange(len(dead))])
        if record is not None:
            self._open_push_pull(record.addr, join=False)

    def _on_reap_timer(self) -> None:
        cfg = self.config
        self._arm(REAP, self._now + cfg.reap_interval)
        self._rumors.expire(self._now)
        for name in self._table.expired(self._now, cfg.dead_reap_after, cfg.left_reap_after):
            record = self._table.remove(name)
            if record is not None:
                if self.identity is not None:
                    self.identity.forget(name)
                self._emit(MemberEventKind.REAPED, record, record.state)

    # ------------------------------------------------------------------ rumors

    def _checked_publish(self, event: Publish) -> Rumor:
        """The rumor ``event`` publishes, or ``ValueError`` if peers would refuse it or it
        would not fit a datagram next to a probe."""
        if self._rumors.clock >= MAX_UINT64:
            raise ValueError("rumor clock exhausted (a peer sent the largest Lamport time)")
        rumor = checked_rumor(
            event.topic, event.key, self._rumors.clock + 1, self._name, event.payload
        )
        size = packed_size(RumorUpdate(rumor, 0).to_wire())
        if size > self._update_room:
            raise MalformedMessage(
                f"rumor of {size} bytes does not fit a {self._update_room}-byte datagram budget"
            )
        return rumor

    def _on_publish(self, rumor: Rumor) -> None:
        """Store and gossip our own rumor; its Lamport time beats every value seen so far.

        A core that has not joined yet may not have seen the mesh's newer values for the key,
        so its publication can lose: publish after ``JoinCompleted`` to be sure.
        """
        self.stats.rumors_published += 1
        self._learn(rumor, self._now)
        self._spread(rumor, self._now)

    def _learn(self, rumor: Rumor, published: float) -> bool:
        """Offer ``rumor`` to the map; report it if taken."""
        if self.identity is not None and not self.identity.admit_rumor(rumor):
            return False
        if not self._rumors.offer(rumor, published, self._now):
            return False
        self.stats.rumors_learned += 1
        self._out.append(RumorLearned(rumor))
        self._expel_revoked()
        return True

    def _spread(self, rumor: Rumor, published: float) -> None:
        """Queue ``rumor`` for gossip, unless it is too big for our datagrams (a peer with a
        larger budget sent it; push-pull still carries it)."""
        update = RumorUpdate(rumor, age_since(published, self._now))
        if packed_size(update.to_wire()) <= self._update_room:
            self._queue.enqueue((rumor.topic, rumor.key), update)

    # ------------------------------------------------------------------ helpers

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

    # ------------------------------------------------------------------ identities

    def _own_proof(self) -> bytes:
        """Our signature on our current alive claim, made once per incarnation."""
        if self.identity is None:
            return b""
        key = (self._incarnation, self._addr, id(self._meta))
        if self._proof_key != key:
            self._proof = self.identity.prove_alive(self._incarnation, self._addr, self._meta)
            self._proof_key = key
        return self._proof

    def _signed(self, message: Alive) -> bool:
        """Whether an alive claim we would act on is the member's own word."""
        identity = self.identity
        if identity is None:
            return True
        return identity.check_alive(
            message.name, message.incarnation, message.addr, message.meta, message.proof
        )

    def _vetted_dead(self, message: Dead, record: Record) -> Dead | None:
        """A dead or left report as identities allow it, or None to ignore it.

        A member's own leave is signed and checked. An unsigned ``left`` (an operator's
        force-leave, from another member) only counts for a member already held dead. Any
        other report names at most the incarnation we know: only the member raises it, so a
        higher one is not news but a forgery (2**64-1 would leave the member nothing to
        refute with). Suspicions are bounded the same way.
        """
        identity = self.identity
        assert identity is not None
        if message.left and message.sender == message.name and message.proof:
            if identity.check_leave(message.name, message.incarnation, message.proof):
                return message
            return None
        if message.left and record.state.live:
            identity.refuse_unsigned()
            return None
        if message.incarnation > record.incarnation:
            return Dead(message.name, record.incarnation, message.sender, message.left)
        return message

    def _on_revoke(self, event: Revoke) -> None:
        identity = self.identity
        if identity is None or not identity.revoke(event.revocation):
            self._expel_revoked()
            return
        topic, key, payload = identity.revocation_rumor(event.revocation)
        rumor = checked_rumor(topic, key, self._rumors.clock + 1, self._name, payload)
        self._learn(rumor, self._now)
        self._spread(rumor, self._now)
        self._expel_revoked()

    def _expel_revoked(self) -> None:
        """Drop members whose certificate was revoked: every member learns the revocation
        itself, so this is local (no gossip), and their later claims are refused."""
        if self.identity is None:
            return
        for name in self.identity.take_expelled():
            record = self._table.get(name)
            if record is None or name == self._name or record.state is State.LEFT:
                continue
            record.proof = b""  # its alive proof is no leave: push-pull it unsigned
            old = self._transition(record, State.LEFT)
            self._emit(MemberEventKind.LEFT, record, old)

    def _emit(self, kind: MemberEventKind, record: Record, old: State | None) -> None:
        self._out.append(MemberEvent(kind, record.snapshot(), old, record.state))
