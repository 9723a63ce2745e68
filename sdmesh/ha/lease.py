"""Host leases and self-fencing with no clock sync: the sans-IO core (one per agent).

A host may run a VM that the mesh would rebuild elsewhere (a ``restart`` policy, isolation
response ``stop``) only while it holds a *lease*. Every agent plays three parts:

* **holder**: each ``renew_interval`` it sends a ``LeaseRequest`` to every voter and dates
  each grant at the request's send time on its own clock. The lease lasts until the k-th
  latest grant date plus its term (k a strict majority of the voters, itself included);
  ``stop_allowance`` before that, unrenewed, it reports ``Isolated``: the driver applies the
  isolation response (stop the fenceable VMs) and re-arms the fence guard to match
  (``LeaseValid.fence_at``).
* **voter**: it grants every request, remembering on its own clock how long the lease it
  granted may last (``LeaseTiming.wait``). Asked to reclaim a holder, it answers how much of
  that wait remains and from then on refuses the holder (``LeaseRevoked``) until the holder
  acknowledges the revocation, which it does only after it has fenced.
* **reclaimer** (the shepherd of a pool that lost a host): ``Reclaim(holder)`` asks every
  voter; once a strict majority answers "nothing remains", ``Reclaimed`` says the holder's
  VMs are stopped and may be rebuilt elsewhere. Any majority that renews a lease shares a
  voter with any majority that reclaims it, and that voter's wait outlasts the lease on any
  clock within the drift bound (the arithmetic: sdmesh.ha.timing).

"Seeing" the mesh is thus a request answered, not a member marked alive in the membership
view: the SWIM view says nothing about *when* a peer last heard from us, and its probes
reach each peer only once per round of the whole mesh, too rarely to renew in seconds.

Two hosts and a witness are three voters: the host that still reaches the witness renews,
the other fences. An even split without a witness leaves no side a majority: both fence and
neither rebuilds until it heals. Assumed: the voter set (members that have not left, kept
across restarts and reaps by sdmesh.ha.voters) is the same on both sides when a cut happens;
a member joining only on one side during a cut can break the majority intersection
(docs/ha.md). A round this host alone granted makes no lease unless ``solo`` (a mesh of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdmesh.ha.timing import LeaseTiming

RENEW = "lease:renew"
FENCE = "lease:fence"
RECLAIM_PREFIX = "lease:reclaim:"
#: Revocations a holder keeps acknowledging in its requests (one per reclaim it heard of).
ACKS_KEPT = 16


# ---------------------------------------------------------------- wire messages (plain data)
@dataclass(frozen=True, slots=True)
class LeaseRequest:
    holder: str
    seq: int
    term: float
    acked: tuple[str, ...] = ()
    """Revocation tickets the holder has fenced for: the voter lifts its refusal."""


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    voter: str
    holder: str
    seq: int


@dataclass(frozen=True, slots=True)
class LeaseRevoked:
    """The voter refuses: reclaim ``tickets`` are outstanding against the holder."""

    voter: str
    holder: str
    tickets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReclaimQuery:
    asker: str
    holder: str
    ticket: str


@dataclass(frozen=True, slots=True)
class ReclaimAnswer:
    voter: str
    holder: str
    ticket: str
    remaining: float | None
    """Seconds (voter's clock) the holder's lease may still run; None: cannot tell yet (the
    voter started too recently to know what it granted before)."""


Message = LeaseRequest | LeaseGrant | LeaseRevoked | ReclaimQuery | ReclaimAnswer


# ---------------------------------------------------------------- events in
@dataclass(frozen=True, slots=True)
class Start:
    """Begin. ``inherited_fence_at``: when the previous agent on this host would have fenced
    (the fence guard's deadline, on this clock); None if unknown, which means at once."""

    voters: frozenset[str]
    inherited_fence_at: float | None = None
    solo: bool = False
    """A mesh of one (no peers configured, or every other voter left): this host's own
    grant alone may make a lease. Otherwise a lease needs a grant from another voter."""


@dataclass(frozen=True, slots=True)
class VotersChanged:
    """The members that vote (not left), this host included, witnesses included."""

    voters: frozenset[str]
    solo: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class Received:
    message: Message


@dataclass(frozen=True, slots=True)
class Reclaim:
    """The shepherd wants to rebuild ``holder``'s VMs: find out when it surely fenced."""

    holder: str


@dataclass(frozen=True, slots=True)
class CancelReclaim:
    """The holder is back (alive again): stop asking. Revocations already made stand."""

    holder: str


@dataclass(frozen=True, slots=True)
class PlannedLeave:
    """An announced stop: ask for a lease of ``leave_term`` so the guard keeps the VMs."""


Event = Start | VotersChanged | TimerFired | Received | Reclaim | CancelReclaim | PlannedLeave


# ---------------------------------------------------------------- actions out
@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class LeaseValid:
    """The lease now runs until ``until``; fence (and arm the guard) at ``fence_at``."""

    until: float
    fence_at: float


@dataclass(frozen=True, slots=True)
class Isolated:
    """The lease ran out (or was revoked): apply the isolation response now."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """A majority says ``holder``'s lease has ended: its VMs may be rebuilt elsewhere."""

    holder: str
    ticket: str


@dataclass(frozen=True, slots=True)
class PersistVoterState:
    """Write this down (``VoterState``) so a restarted voter keeps its promises."""

    state: VoterState


Action = Send | SetTimer | LeaseValid | Isolated | Reclaimed | PersistVoterState


@dataclass(frozen=True, slots=True)
class VoterState:
    """What a voter must remember across a restart: outstanding revocations, and grants
    longer than the isolation timeout (a leave's), as seconds still to wait when written.
    Short grants are not kept: a restarted voter answers no reclaim for a rebuild wait."""

    revoked: tuple[tuple[str, str], ...] = ()
    long_grants: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class _Reclaim:
    ticket: str
    zero: set[str] = field(default_factory=set)
    done: bool = False
    next_at: float | None = None


def majority(count: int) -> int:
    """The smallest strict majority of ``count`` voters."""
    return count // 2 + 1


class LeaseCore:
    """One agent's lease state machine: feed events with ``now`` (its own clock, seconds)."""

    def __init__(
        self,
        name: str,
        timing: LeaseTiming | None = None,
        saved: VoterState | None = None,
        nonce: str = "",
    ) -> None:
        """``saved``: the voter state this agent wrote before it restarted. ``nonce``: makes
        this run's reclaim tickets unlike any earlier run's (a random string)."""
        self.name = name
        self.nonce = nonce
        self.timing = timing or LeaseTiming()
        self.voters: frozenset[str] = frozenset({name})
        self._now = 0.0
        self._out: list[Action] = []
        self._started_at: float | None = None
        # holder
        self._seq = 0
        self._sent: dict[int, tuple[float, float]] = {}  # seq -> (sent at, term)
        self._floor = 0  # grants for requests up to this seq predate a lapse: ignored
        self._granted: dict[str, float] = {}  # voter -> lease end it vouches for
        self._until: float | None = None
        self._fence_at: float | None = None
        self._isolated = True
        self._solo = False
        self._acked: list[str] = []
        self._term = self.timing.isolation_timeout
        # voter
        self._grant_until: dict[str, float] = {}
        self._revoked: dict[str, set[str]] = {}
        self._restored = saved or VoterState()
        # reclaimer
        self._tickets = 0
        self._reclaims: dict[str, _Reclaim] = {}

    # ------------------------------------------------------------ queries
    def may_run(self, now: float) -> bool:
        """Whether this host may start or keep a fenceable VM at ``now``."""
        return not self._isolated and self._fence_at is not None and now < self._fence_at

    @property
    def fence_at(self) -> float | None:
        return None if self._isolated else self._fence_at

    @property
    def valid_until(self) -> float | None:
        return None if self._isolated else self._until

    def voter_state(self) -> VoterState:
        long = [
            (holder, round(until - self._now, 3))
            for holder, until in sorted(self._grant_until.items())
            if until - self._now > self.timing.rebuild_wait
        ]
        revoked = sorted((h, t) for h, tickets in self._revoked.items() for t in tickets)
        return VoterState(tuple(revoked), tuple(long))

    # ------------------------------------------------------------ entry point
    def handle(self, event: Event, now: float) -> list[Action]:
        self._now = now
        out: list[Action] = []
        self._out = out
        if isinstance(event, Start):
            self._start(event)
        elif self._started_at is None:
            return []
        elif self._fence_at is not None and not self._isolated and now >= self._fence_at:
            # Any event checks the deadline: a driver's timer can fire late (a suspend).
            self._lapse("no majority of the mesh answered within the isolation timeout")
        if isinstance(event, Start):
            pass
        elif isinstance(event, VotersChanged):
            self.voters = event.voters | {self.name}
            self._solo = event.solo
            self._recount()
            for holder in list(self._reclaims):
                self._check_reclaim(holder)
        elif isinstance(event, TimerFired):
            self._on_timer(event.name)
        elif isinstance(event, Received):
            self._on_message(event.message)
        elif isinstance(event, Reclaim):
            self._reclaim(event.holder)
        elif isinstance(event, CancelReclaim):
            self._reclaims.pop(event.holder, None)
        elif isinstance(event, PlannedLeave):
            self._term = self.timing.leave_term
            self._renew()
        return out

    # ------------------------------------------------------------ start and timers
    def _start(self, event: Start) -> None:
        if self._started_at is not None:
            return
        self._started_at = self._now
        self.voters = event.voters | {self.name}
        self._solo = event.solo
        for holder, ticket in self._restored.revoked:
            self._revoked.setdefault(holder, set()).add(ticket)
        for holder, remaining in self._restored.long_grants:
            self._grant_until[holder] = self._now + max(0.0, remaining)
        inherited = event.inherited_fence_at
        grace = self._now + self.timing.isolation_timeout - self.timing.stop_allowance
        # Leftovers of a previous agent are covered until its own deadline, never longer.
        self._fence_at = self._now if inherited is None else min(inherited, grace)
        self._isolated = self._fence_at <= self._now
        if self._isolated:
            self._out.append(Isolated("no lease yet (start-up)"))
        else:
            self._out.append(SetTimer(FENCE, self._fence_at))
        self._renew()

    def _on_timer(self, name: str) -> None:
        if name == RENEW:
            self._renew()
        elif name == FENCE:
            if not self._isolated and self._fence_at is not None and self._now >= self._fence_at:
                self._lapse("no majority of the mesh answered within the isolation timeout")
            elif not self._isolated and self._fence_at is not None:
                self._out.append(SetTimer(FENCE, self._fence_at))
        elif name.startswith(RECLAIM_PREFIX):
            self._ask(name[len(RECLAIM_PREFIX) :])

    # ------------------------------------------------------------ holder
    def _renew(self) -> None:
        self._seq += 1
        self._sent[self._seq] = (self._now, self._term)
        horizon = self._now - self.timing.leave_term - self.timing.isolation_timeout
        for seq in [s for s, (at, _) in self._sent.items() if at < horizon]:
            del self._sent[seq]
        request = LeaseRequest(self.name, self._seq, self._term, tuple(self._acked))
        for voter in sorted(self.voters - {self.name}):
            self._out.append(Send(voter, request))
        self._on_grant(LeaseGrant(self.name, self.name, self._seq))
        self._out.append(SetTimer(RENEW, self._now + self.timing.renew_interval))

    def _on_grant(self, grant: LeaseGrant) -> None:
        sent = self._sent.get(grant.seq)
        if sent is None or grant.holder != self.name or grant.seq <= self._floor:
            return
        at, term = sent
        self._granted[grant.voter] = max(self._granted.get(grant.voter, 0.0), at + term)
        self._recount()

    def _recount(self) -> None:
        granted = [v for v in self.voters if v in self._granted]
        if not self._solo and granted == [self.name]:
            # Our own grant alone: a host that has not yet heard of its mesh (a restart
            # before the join) is no majority. Until another voter grants, the lease stays
            # where Start put it: the inherited guard deadline, or none.
            return
        ends = sorted((self._granted[v] for v in granted), reverse=True)
        need = majority(len(self.voters))
        if len(ends) < need:
            return
        until = ends[need - 1]
        fence_at = until - self.timing.stop_allowance
        if fence_at <= self._now or (self._until is not None and until <= self._until):
            return
        self._until, self._fence_at = until, fence_at
        self._isolated = False
        self._out.append(LeaseValid(until, fence_at))
        self._out.append(SetTimer(FENCE, fence_at))

    def _lapse(self, reason: str) -> None:
        self._isolated = True
        self._granted.clear()
        self._until = None
        self._fence_at = None
        self._term = self.timing.isolation_timeout
        self._floor = self._seq
        self._out.append(Isolated(reason))

    def _on_revoked(self, revoked: LeaseRevoked) -> None:
        fresh = [t for t in revoked.tickets if t not in self._acked]
        if revoked.holder != self.name or not fresh:
            return
        # Fence first (the driver stops the VMs before anything else), then acknowledge:
        # whatever runs here after the acknowledgement was started after the reclaim.
        if not self._isolated:
            self._lapse(f"{revoked.voter} revoked the lease (reclaim {fresh[0]})")
        else:
            self._granted.clear()
            self._floor = self._seq
        self._acked = [*self._acked, *fresh][-ACKS_KEPT:]
        self._renew()

    # ------------------------------------------------------------ voter
    def _on_request(self, request: LeaseRequest) -> None:
        holder = request.holder
        if request.term > self.timing.leave_term:
            return  # longer than any lease we promise: no grant (it would block reclaims)
        tickets = self._revoked.get(holder)
        if tickets is not None:
            if tickets & set(request.acked):
                tickets -= set(request.acked)
                if not tickets:
                    del self._revoked[holder]
                self._persist()
            if tickets:
                refusal = LeaseRevoked(self.name, holder, tuple(sorted(tickets)))
                self._out.append(Send(holder, refusal))
                return
        until = self._now + self.timing.wait(request.term)
        before = self._grant_until.get(holder, 0.0)
        self._grant_until[holder] = max(before, until)
        self._out.append(Send(holder, LeaseGrant(self.name, holder, request.seq)))
        if request.term > self.timing.isolation_timeout and until > before:
            self._persist()

    def _answer(self, holder: str, ticket: str) -> float | None:
        """Revoke ``holder``'s lease here and say how long it may still run."""
        tickets = self._revoked.setdefault(holder, set())
        if ticket not in tickets:
            tickets.add(ticket)
            self._persist()
        assert self._started_at is not None
        remaining = max(0.0, self._grant_until.get(holder, 0.0) - self._now)
        if self._now - self._started_at < self.timing.rebuild_wait and remaining == 0.0:
            return None  # what we granted before our restart is forgotten: cannot tell yet
        return remaining

    def _persist(self) -> None:
        self._out.append(PersistVoterState(self.voter_state()))

    # ------------------------------------------------------------ reclaimer
    def _reclaim(self, holder: str) -> None:
        if holder == self.name or holder in self._reclaims:
            return
        self._tickets += 1
        self._reclaims[holder] = _Reclaim(f"{self.name}/{self.nonce}/{self._tickets}")
        self._ask(holder)

    def _ask(self, holder: str) -> None:
        reclaim = self._reclaims.get(holder)
        if reclaim is None or reclaim.done:
            return
        mine = self._answer(holder, reclaim.ticket)
        self._count(holder, self.name, mine)
        if holder not in self._reclaims:
            return  # reclaimed on our own answer (a mesh of one or two)
        query = ReclaimQuery(self.name, holder, reclaim.ticket)
        for voter in sorted(self.voters - {self.name, holder} - reclaim.zero):
            self._out.append(Send(voter, query))
        reclaim.next_at = None
        self._retry(holder, reclaim, self.timing.renew_interval)
        if mine:
            self._retry(holder, reclaim, mine)

    def _retry(self, holder: str, reclaim: _Reclaim, after: float) -> None:
        """Ask again ``after`` seconds from now, unless an earlier round is due already."""
        at = self._now + max(after, 0.05)
        if reclaim.next_at is None or at < reclaim.next_at:
            reclaim.next_at = at
            self._out.append(SetTimer(RECLAIM_PREFIX + holder, at))

    def _count(self, holder: str, voter: str, remaining: float | None) -> None:
        reclaim = self._reclaims.get(holder)
        if reclaim is None or reclaim.done:
            return
        if remaining == 0.0:
            reclaim.zero.add(voter)
        self._check_reclaim(holder)

    def _check_reclaim(self, holder: str) -> None:
        reclaim = self._reclaims.get(holder)
        if reclaim is None or reclaim.done:
            return
        if len(reclaim.zero & self.voters) >= majority(len(self.voters)):
            reclaim.done = True
            del self._reclaims[holder]
            self._out.append(Reclaimed(holder, reclaim.ticket))

    # ------------------------------------------------------------ messages
    def _on_message(self, message: Message) -> None:
        if isinstance(message, LeaseRequest):
            if message.holder != self.name:
                self._on_request(message)
        elif isinstance(message, LeaseGrant):
            self._on_grant(message)
        elif isinstance(message, LeaseRevoked):
            self._on_revoked(message)
        elif isinstance(message, ReclaimQuery):
            if message.holder != self.name:
                remaining = self._answer(message.holder, message.ticket)
                answer = ReclaimAnswer(self.name, message.holder, message.ticket, remaining)
                self._out.append(Send(message.asker, answer))
        else:
            reclaim = self._reclaims.get(message.holder)
            if reclaim is not None and message.ticket == reclaim.ticket:
                self._count(message.holder, message.voter, message.remaining)
                if message.remaining and not reclaim.done:
                    self._retry(message.holder, reclaim, message.remaining)
