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

The core is one class put together from parts, each in its own module: ``core_base`` (shared
state, timers, sending, gossip), ``core_identity`` (what host identities allow),
``core_rules`` (alive/suspect/dead rules, refutation, rumors), ``core_probing`` (probe
rounds and relays) and ``core_exchange`` (push-pull, join, reconnect); ``Membership`` here
adds the entry point, the queries and the node's own lifecycle.
"""

from __future__ import annotations

from sdmesh.membership.actions import (
    Action,
    ForceLeaveOutcome,
    ForceLeaveResult,
    LeaveCompleted,
    MemberEventKind,
)
from sdmesh.membership.core_base import (
    COMPOUND_OVERHEAD,
    GOSSIP,
    JOIN_RETRY,
    LEAVE,
    PROBE,
    PROBE_BYTES,
    PROBE_TIMEOUT,
    PUSH_PULL,
    REAP,
    RECONNECT,
    RELAY_PREFIX,
    SUSPICION_PREFIX,
    Phase,
    Stats,
)
from sdmesh.membership.core_exchange import (
    REGOSSIP_PER_MERGE,
    RUMOR_LIST_OVERHEAD,
    PushPullExchange,
)
from sdmesh.membership.core_probing import Probing
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
from sdmesh.membership.member import Address, Member, Meta, State
from sdmesh.membership.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    PacketMessage,
    Ping,
    PingReq,
    Rumor,
    RumorUpdate,
    SimpleMessage,
    Suspect,
)
from sdmesh.membership.table import Record

__all__ = [
    "COMPOUND_OVERHEAD",
    "GOSSIP",
    "JOIN_RETRY",
    "LEAVE",
    "PROBE",
    "PROBE_BYTES",
    "PROBE_TIMEOUT",
    "PUSH_PULL",
    "REAP",
    "RECONNECT",
    "REGOSSIP_PER_MERGE",
    "RELAY_PREFIX",
    "RUMOR_LIST_OVERHEAD",
    "SUSPICION_PREFIX",
    "Membership",
    "Phase",
    "Stats",
]


class Membership(Probing, PushPullExchange):
    """One node's membership protocol state machine.

    Driver contract: feed every event with the current time of a monotonic clock, in seconds
    (``loop.time()`` in asyncio), and execute the returned actions in order. Timers are named
    and absolute on that clock; ``SetTimer`` replaces an armed timer of the same name, and the
    core ignores a ``TimerFired`` that is early, stale or cancelled, so a driver need not be
    exact about cancellation. Datagrams go through the transport's ``decode_packet`` and
    streams through ``decode_stream`` before they become events.
    """

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
