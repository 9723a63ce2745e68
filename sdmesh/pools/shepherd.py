"""The shepherd core: one pool's lifecycle across the mesh, as events in and actions out.

The shepherd runs the single-host lifecycle engine over the whole tree, so SmartFrog's
semantics (Compound barriers, Parallel ``asynchCreateChild``, ``sfSyncTerminate`` order,
liveness) hold across hosts unchanged; what differs is where a leaf's work happens. Each leaf
operation the engine asks for becomes an :class:`~sdmesh.pools.records.Order` to the host the
leaf's unit is placed on, and the host's :class:`~sdmesh.pools.records.Report` becomes the
engine's ``LeafDone``.

Around the engine the core owns what a coordinator-free pool needs:

* placement of every unit up front, saved (``SaveRecord``) before any order uses it, so a
  successor shepherd finds the same placement in the DHT;
* re-placement when a host refuses a unit (never overcommit: the host is the authority);
* fencing: every order carries the generation; a host that has seen a newer one answers
  ``fenced``, to any order, and the fenced core steps down (``Superseded``): its driver
  reads the newer record and, if this agent is still the rightful shepherd, takes the pool
  over from it (the newer placement included) at a higher generation;
* HA: when a host dies, units with a ``restart`` policy move to other hosts (their completed
  operations are replayed there; the engine never notices), others end abnormally and the
  lifecycle rules decide what follows;
* reconciliation: a host's inventory of what it runs is compared with the placement, and
  stale copies (a host that was partitioned away while its units moved) are released;
* graceful departures: a host that *left* (``sdmesh leave``, SIGTERM) keeps its VMs running,
  so its units stay where they are for ``AWAY_GRACE`` (an agent restart or upgrade) before
  they count as lost, unlike a host that died or was cut off.

Takeover is a fresh core over the saved record: its engine re-runs deploy and start, and
hosts answer at once for leaves they already run, so nothing is started twice. A hand-over
(the shepherd leaves) is a takeover told in advance: the leaving core hands its freshest
record to its successor and never acts again; the successor takes over at a higher
generation and trusts what the leaving host vouched it runs (it cannot ask it any more).
The record keeps every away host's grace end and what it runs, so any later takeover honours
the grace too. Without a majority the driver pauses the core (``Pause``/``Resume``): it
decides nothing meanwhile and goes on at the same generation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle import model as lm
from sdmesh.lifecycle.engine import Engine
from sdmesh.pools.layout import Layout, Unit
from sdmesh.pools.placement import NO_SHELL_ANYWHERE, Demand, HostOffer, place, shell_host
from sdmesh.pools.records import Order, PoolRecord, Report

# ------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Begin:
    """Start the pool (or take it over): deploy and start the whole tree.

    ``vouched``: at a hand-over, what the departing shepherd's own host runs of the pool
    (host -> leaf path -> ``deployed`` or ``running``). The host is leaving and cannot be
    asked; its VMs keep running, so its word stands in for the answers it would give."""

    vouched: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answered:
    """A host's immediate answer to an order: ``accepted``, ``refused`` (with the reason),
    ``fenced`` (it has seen generation ``seen``) or ``unreachable``."""

    host: str
    order: Order
    outcome: str
    reason: str = ""
    seen: int = 0


@dataclass(frozen=True)
class Reported:
    report: Report


@dataclass(frozen=True)
class MembersChanged:
    """The live members and what they offer (from gossiped metadata); ``away``: members
    that left gracefully or are leaving: their VMs keep running without an agent."""

    offers: tuple[HostOffer, ...]
    away: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Inventory:
    """What a host says it runs of this pool: leaf path -> generation it was ordered at;
    ``states``: leaf path -> its state there (``running``, ``deployed``: a VM that died is
    defined but not running). Hosts from before states were sent leave it empty."""

    host: str
    leaves: dict[str, int]
    states: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TerminateRequested:
    reason: str = "terminated on request"


@dataclass(frozen=True)
class TimerFired:
    name: str


@dataclass(frozen=True)
class HandOver:
    """This agent is leaving: give the pool to ``successor`` (empty: nobody is left)."""

    successor: str


@dataclass(frozen=True)
class HostReclaimed:
    """The host lost earlier (``ReclaimHost``) has surely stopped its fenceable VMs (a
    majority of voters says its lease ended): its units may be rebuilt elsewhere now."""

    host: str


@dataclass(frozen=True)
class Pause:
    """This agent lost the majority of the mesh: decide nothing (no order, no move, no save)
    until ``Resume``; what arrives meanwhile waits (the latest view only, no inventory)."""


@dataclass(frozen=True)
class Resume:
    """The majority is back and nobody took the pool over meanwhile: go on at the same
    generation, with what arrived during the pause, resending what may have been dropped."""


Event = (
    Begin
    | Answered
    | Reported
    | MembersChanged
    | Inventory
    | TerminateRequested
    | TimerFired
    | HandOver
    | HostReclaimed
    | Pause
    | Resume
)

# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class SaveRecord:
    """Write the record to the DHT; orders after it in the same batch depend on it."""

    record: PoolRecord


@dataclass(frozen=True)
class SendOrder:
    host: str
    order: Order


@dataclass(frozen=True)
class SetTimer:
    name: str
    at: float


@dataclass(frozen=True)
class ComponentChanged:
    path: str
    kind: str
    state: str
    host: str
    #: Why it ended, for a component that failed (its termination record).
    reason: str = ""


@dataclass(frozen=True)
class PoolChanged:
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Warning:
    path: str
    message: str


@dataclass(frozen=True)
class HandOff:
    """Hand ``record`` (the freshest state, saved with the same batch) to ``successor``,
    which takes over at a higher generation. The core is inert from here on: a late answer
    (``fenced`` by the successor's orders) must not make it re-assert itself."""

    successor: str
    record: PoolRecord


@dataclass(frozen=True)
class Announce:
    """Publish the pool's rumor again, unchanged (``Shepherd.announcement``): rumors expire
    (a day), and a pool nobody has heard of is neither taken over nor safe from the reaper."""

    state: str


@dataclass(frozen=True)
class Superseded:
    """A host answered ``fenced``: it has seen generation ``seen`` of the pool from another
    shepherd (a takeover this agent never noticed, e.g. during a short cut or a false
    "dead"). This core's state is stale and it acts no more, whatever order was fenced: the
    driver reads the record again and, if this agent is still the pool's shepherd, takes
    the pool over from it above ``seen``; else it leaves the pool to its shepherd."""

    seen: int


@dataclass(frozen=True)
class ReclaimHost:
    """``host`` is lost (dead, cut off, or its leave's grace ran out): before any of its
    units is rebuilt elsewhere, find out that it has surely stopped them (its lease ended,
    sdmesh.ha); the driver answers ``HostReclaimed``. Meanwhile its units stay placed there."""

    host: str


@dataclass(frozen=True)
class CancelReclaim:
    """``host`` is back before its reclaim completed: stop asking (its VMs stayed, or it
    fenced them and reports so)."""

    host: str


Action = (
    SaveRecord
    | SendOrder
    | SetTimer
    | ComponentChanged
    | PoolChanged
    | Warning
    | HandOff
    | Superseded
    | ReclaimHost
    | CancelReclaim
)

RETRY_SECONDS = 1.0
MAX_RETRIES = 5
#: How long the units of a host that left gracefully stay placed there (its VMs keep
#: running) before they count as lost: long enough for an agent restart or upgrade.
AWAY_GRACE = 300.0


@dataclass
class _Leaf:
    path: str
    unit: str
    state: str = "created"
    host: str = ""
    #: The engine's operation in flight ("deploy", "start", "terminate").
    engine_op: str | None = None
    retries: int = 0


class Shepherd:
    """The core of one pool at its shepherd."""

    def __init__(
        self,
        record: PoolRecord,
        tree: ComponentDescription,
        layout: Layout,
        kinds: dict[str, str],
        offers: tuple[HostOffer, ...],
        wall_offset: float = 0.0,
    ) -> None:
        """``wall_offset``: wall clock minus the ``now`` this core is given; the record
        keeps grace ends in wall-clock time, the one clock every agent shares."""
        self.pool = record.pool
        self.digest = record.digest
        self.signature = record.signature  # the operator's envelope, on every deploy/start
        self.me = record.shepherd
        self.generation = record.generation
        self.state = record.state if record.state != "failed" else "failed"
        self.reason = record.reason
        self.layout = layout
        self.kinds = kinds
        self.placement = dict(record.placement)
        self.offers = {offer.name: offer for offer in offers}
        self.engine = Engine(tree)
        self.leaves: dict[str, _Leaf] = {}
        for unit in layout.units.values():
            for path in unit.leaves:
                self.leaves[path] = _Leaf(path, unit.path)
        for path in layout.local:
            self.leaves[path] = _Leaf(path, path)
        self.refused: dict[str, set[str]] = {}
        #: Units being rebuilt on a new host: (leaf, op) still to redo, in order. The
        #: engine's own operations on their leaves wait until the rebuild is done.
        self.replays: dict[str, deque[tuple[str, str]]] = {}
        self.ended = False
        #: Hosts that left gracefully -> when their grace ends; what they run (their own
        #: word at a hand-over, else what a shepherd knew when they left). From the record:
        #: a takeover honours a predecessor's grace instead of rebuilding their VMs.
        self.wall_offset = wall_offset
        self.away: dict[str, float] = {h: t - wall_offset for h, t in record.away.items()}
        self.vouched: dict[str, dict[str, str]] = {
            h: dict(record.vouched.get(h, {})) for h in record.away
        }
        self.begun = False
        #: Without a majority (``Pause``): events kept for ``Resume``.
        self.paused = False
        self._deferred: list[Event] = []
        #: The successor this core handed the pool to; set, the core does nothing more.
        self.handed_to: str | None = None
        #: The newer generation a host had seen when it fenced us; set, the core is inert.
        self.superseded: int | None = None
        #: Lost hosts whose reclaim is under way (``ReclaimHost``): their units stay placed
        #: there, nothing of them is rebuilt, until ``HostReclaimed``.
        self.reclaiming: set[str] = set()
        #: Lost hosts whose reclaim completed: their units may move (``isolation "keep"``
        #: ones stay until the host is back).
        self.reclaimed: set[str] = set()
        self._actions: list[Action] = []
        self._now = 0.0
        self._engine_timers: dict[str, tuple[str, int]] = {}

    # ======================================================================= interface
    def handle(self, event: Event, now: float) -> list[Action]:
        self._now = now
        self._actions = []
        if self.handed_to is not None or self.superseded is not None:
            return []
        if isinstance(event, HandOver):
            self.handed_to = event.successor
            return [SaveRecord(self.record()), HandOff(event.successor, self.record())]
        if isinstance(event, Pause):
            self.paused = True
            return []
        if isinstance(event, Resume):
            if self.paused:
                self._resume()
        elif self.paused:
            if isinstance(event, MembersChanged):  # only the latest view matters
                self._deferred = [e for e in self._deferred if not isinstance(e, MembersChanged)]
            if not isinstance(event, Inventory):  # periodic: the next one is fresher
                self._deferred.append(event)
            return []
        else:
            self._dispatch(event)
        if self.superseded is None:
            self._settle()
        actions, self._actions = self._actions, []
        return actions

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Begin):
            self._begin(event.vouched)
        elif isinstance(event, Answered):
            self._on_answer(event)
        elif isinstance(event, Reported):
            self._on_report(event.report)
        elif isinstance(event, MembersChanged):
            self._on_members(event.offers, event.away)
        elif isinstance(event, Inventory):
            self._on_inventory(event)
        elif isinstance(event, TerminateRequested):
            if not self.engine.root.state.ended:
                self._set_pool("terminating", event.reason)
                self._feed(lm.TerminateApplication(lm.TerminationRecord.normal_end(event.reason)))
        elif isinstance(event, TimerFired):
            self._on_timer(event.name)
        elif isinstance(event, HostReclaimed):
            self._on_reclaimed(event.host)

    def _resume(self) -> None:
        """Replay what waited (the latest view first), then resend what the pause may have
        kept from the hosts (they answer at once for what they already did) and save."""
        self.paused = False
        waiting, self._deferred = self._deferred, []
        waiting.sort(key=lambda e: not isinstance(e, MembersChanged))
        for event in waiting:
            self._dispatch(event)
        sent = {
            (a.host, a.order.path, a.order.op) for a in self._actions if isinstance(a, SendOrder)
        }
        before = len(self._actions)
        self._resend_all()
        self._actions[before:] = [
            a
            for a in self._actions[before:]
            if not (isinstance(a, SendOrder) and (a.host, a.order.path, a.order.op) in sent)
        ]
        self._save()

    def superseded_by(self, stored: PoolRecord) -> bool:
        """A record saved by someone else while we were paused: another shepherd took the
        pool over, so this core's state is stale and must not resume."""
        return stored.generation > self.generation

    def announcement(self) -> Announce | None:
        """What the driver publishes again every few hours (``ANNOUNCE_PERIOD``): the pool's
        rumor while it lives here; nothing once it ended or was handed over."""
        if (
            self.ended
            or self.handed_to is not None
            or self.superseded is not None
            or self.engine.root.state.ended
        ):
            return None
        return Announce(self.state)

    def record(self) -> PoolRecord:
        away = {h: t + self.wall_offset for h, t in self.away.items()}
        return PoolRecord(
            self.pool,
            self.digest,
            self.generation,
            self.me,
            self.state,
            dict(self.placement),
            self.reason,
            away,
            {h: dict(self.vouched.get(h, {})) for h in away},
            self.signature,
        )

    def components(self) -> list[dict[str, object]]:
        """Every leaf with its host and state, in descriptor order (``status --json``). A leaf
        being rebuilt (its unit lost or moved) is not running, whatever the engine, which
        never notices the rebuild, believes."""
        out: list[dict[str, object]] = []
        for leaf in self.leaves.values():
            state = leaf.state
            if leaf.unit in self.replays and state in ("deployed", "starting", "running"):
                state = (
                    "deploying" if (leaf.path, "deploy") in self.replays[leaf.unit] else "starting"
                )
            out.append(
                {
                    "path": leaf.path,
                    "kind": self.kinds.get(leaf.path, "Component"),
                    "host": leaf.host or self.placement.get(leaf.unit, ""),
                    "state": state,
                }
            )
        return out

    # ========================================================================= begin
    def _begin(self, vouched: Mapping[str, Mapping[str, str]]) -> None:
        self.begun = True
        for host, ends in list(self.away.items()):  # from the record: the grace goes on
            if host in self.offers:
                del self.away[host]
                self.vouched.pop(host, None)
            elif ends <= self._now:
                del self.away[host]  # it ran out: its units are lost, moved once reclaimed
                self.vouched.pop(host, None)
            else:
                self._actions.append(SetTimer(f"away:{host}", ends))
        for host, leaves in vouched.items():
            self.vouched[host] = dict(leaves)  # the host's own word beats anyone's memory
            if host not in self.offers and host not in self.away:
                self._host_away(host)
        if self.state != "terminating":
            self._place_all()
        self._save()
        self._set_pool(self.state if self.state in ("terminating",) else "deploying")
        if self.state == "terminating":
            # A predecessor was terminating it and how far it got is unknown. Replaying the
            # deploy only to undo it would re-create what it already removed, and miss what
            # the replay had not reached yet: release every leaf still placed on a live host
            # instead (a host answers at once for what it no longer has), and end.
            self._release_everything()
            self._feed(lm.TerminateApplication(lm.TerminationRecord.normal_end(self.reason)))
        else:
            self._feed(lm.StartApplication())

    def _place_all(self) -> None:
        """Place every unit not on a live member. Units on a host that left stay there (its
        VMs run on), and so do units on a lost host until its reclaim completes (it may still
        run them); local leaves go with the shepherd."""
        for host in sorted(set(self.placement.values())):
            if host not in self.offers and host not in self.away:
                self._lose(host)
        units = [
            u
            for u in self.layout.units.values()
            if self.placement.get(u.path) not in self.away
            and self.placement.get(u.path) not in self.reclaiming
            and not (
                self._kept_in_isolation(u.path) and self.placement.get(u.path) in self.reclaimed
            )
        ]
        placed = {u: h for u, h in self.placement.items() if h in self.offers}
        plan = place([u.demand for u in units], self.offers.values(), already=placed)
        self.placement.update(plan.assignments)
        for local in self.layout.local:
            if self.placement.get(local) not in self.offers:
                self.placement[local] = self._local_host(local)
        for missing in plan.unplaced:
            self._warn(missing.path, f"cannot be placed: {missing.reason}")

    def _local_host(self, path: str) -> str:
        """Local leaves go with the shepherd; shell ones to a host that allows shell (the
        shepherd first). With none, the shepherd's own refusal (naming allow-shell) becomes
        the leaf's failure."""
        if path not in self.layout.shell:
            return self.me
        host = shell_host(self.offers.values(), self.me)
        if host is None:
            self._warn(path, f"cannot be placed: {NO_SHELL_ANYWHERE}")
            return self.me
        return host

    def _release_everything(self) -> None:
        for unit_path, host in sorted(self.placement.items()):
            unit = self.layout.units.get(unit_path)
            leaves = unit.leaves if unit is not None else (unit_path,)
            for path in reversed(leaves):  # a VM before its disks
                leaf = self.leaves.get(path)
                if leaf is not None:
                    leaf.state = "terminated"
                    leaf.host = host
                if host in self.offers:
                    order = Order(
                        self.pool,
                        self.generation,
                        self.me,
                        self.digest,
                        path,
                        "terminate",
                        unit_path,
                    )
                    self._actions.append(SendOrder(host, order))

    # ================================================================ engine plumbing
    def _feed(self, event: lm.Event) -> None:
        for action in self.engine.handle(event, self._now):
            self._engine_action(action)

    def _engine_action(self, action: lm.Action) -> None:
        if isinstance(action, lm.LeafDeploy):
            self._engine_op(action.path, "deploy")
        elif isinstance(action, lm.LeafStart):
            self._engine_op(action.path, "start")
        elif isinstance(action, lm.LeafTerminate):
            self._engine_op(action.path, "terminate")
        elif isinstance(action, lm.SetTimer):
            name = f"engine:{action.path}:{action.token}"
            self._engine_timers[name] = (action.path, action.token)
            self._actions.append(SetTimer(name, action.at))
        elif isinstance(action, lm.StateChanged):
            leaf = self.leaves.get(action.path)
            if leaf is not None:
                leaf.state = action.state.value
                self._actions.append(
                    ComponentChanged(
                        action.path,
                        self.kinds.get(action.path, action.kind),
                        action.state.value,
                        leaf.host or self.placement.get(leaf.unit, ""),
                        action.record.description if action.record is not None else "",
                    )
                )
            if action.path == self.engine.root.path:
                self._root_changed(action.state, action.record)
        elif isinstance(action, lm.ApplicationEnded):
            self.ended = True
            failed = not action.record.normal
            self._set_pool("failed" if failed else "terminated", action.record.description)
            self._save()
        elif isinstance(action, lm.Problem):
            self._warn(action.path, action.message)

    def _root_changed(self, state: lm.State, record: lm.TerminationRecord | None) -> None:
        if state is lm.State.TERMINATING and self.state not in ("terminating",):
            self._set_pool("terminating", record.description if record else "")

    def _settle(self) -> None:
        """The pool runs once its root does and no leaf operation is under way: a Parallel
        with ``asynchCreateChild`` counts as started before its children are up, and
        ``submit --wait`` must not return before the VMs are."""
        if self.state != "deploying" or self.engine.root.state is not lm.State.RUNNING:
            return
        if self.replays or any(leaf.engine_op is not None for leaf in self.leaves.values()):
            return
        self._set_pool("running")
        self._save()

    def _engine_op(self, path: str, op: str) -> None:
        leaf = self.leaves.get(path)
        if leaf is None:  # a leaf the layout did not see (created by a combinator at run time)
            leaf = self.leaves[path] = _Leaf(path, path)
            self.placement.setdefault(path, self.me)
        leaf.engine_op = op
        leaf.retries = 0
        host = self.placement.get(leaf.unit)
        if op == "terminate" and (host is None or host not in self.offers):
            # Nothing to ask of a dead or unknown host; it cleans up when it comes back.
            self._engine_done(leaf, None)
            return
        if host is not None and host not in self.offers and host not in self.away:
            if host not in self.reclaimed:
                self._lose(host)
            if host in self.reclaiming or self._kept_in_isolation(leaf.unit):
                leaf.host = host
                return  # sent (or moved) once the host is back or surely stopped it
        if host is not None and host in self.away:
            if self._vouched_for(host, path, op):
                leaf.host = host  # it runs there and keeps running: done, as the host said
                self._engine_done(leaf, None)
            elif self._move(leaf.unit, reason=f"{host} left without it"):
                self._replay_unit(leaf.unit)  # what the unit has done so far, then this op
            else:
                self._engine_done(leaf, f"no live host can take {leaf.unit}")
            return
        if host is None or host not in self.offers:
            if not self._move(leaf.unit, reason=f"{host or 'no host'} is not a live member"):
                self._engine_done(leaf, f"no live host can take {leaf.unit}")
                return
            host = self.placement[leaf.unit]
        if leaf.unit in self.replays:
            return  # sent when the unit's rebuild is done
        self._send(leaf, op, host)

    def _engine_done(self, leaf: _Leaf, error: str | None) -> None:
        op = leaf.engine_op
        if op is None:
            return
        leaf.engine_op = None
        self._feed(lm.LeafDone(leaf.path, op, error))

    def _send(self, leaf: _Leaf, op: str, host: str) -> None:
        leaf.host = host
        unit = self.layout.units.get(leaf.unit)
        demand = unit.demand if unit is not None else None
        self._actions.append(
            SendOrder(
                host,
                Order(
                    self.pool,
                    self.generation,
                    self.me,
                    self.digest,
                    leaf.path,
                    op,
                    leaf.unit,
                    demand.vcpus if demand else 0,
                    demand.memory_mib if demand else 0,
                    self.signature,
                ),
            )
        )

    # ================================================================ host answers
    def _on_answer(self, answer: Answered) -> None:
        order = answer.order
        if answer.outcome == "fenced" and (
            answer.seen > self.generation
            or (answer.seen == self.generation and order.generation == self.generation)
        ):
            # Whatever the order (a release from the inventory included): someone else
            # holds this generation or a newer one. Fenced answers to orders from before our
            # own last bump (seen below our generation) are no news and fall through.
            self._step_down(answer.seen)
            return
        leaf = self.leaves.get(order.path)
        if leaf is None or leaf.host != answer.host or order.op != self._awaited(leaf):
            # About an order we have since replaced: the unit moved, or the leaf moved on.
            # Not the generation: moving one unit bumps it, and answers to the orders sent
            # to the other units before the bump still count (a refusal must not be lost).
            return
        if answer.outcome == "accepted":
            return
        if answer.outcome == "fenced":
            return  # an order from before our own last generation bump: superseded by us
        if answer.outcome == "unreachable":
            if answer.host not in self.offers and answer.host not in self.away:
                self._lose(answer.host)  # lost: moved once reclaimed, resent once back
                return
            if leaf.retries < MAX_RETRIES and answer.host in self.offers:
                leaf.retries += 1
                self._arm(f"retry:{leaf.path}:{order.op}", RETRY_SECONDS * leaf.retries)
                return
            self._host_failed(leaf, order.op, f"{answer.host} is unreachable")
            return
        # refused: the host will not admit the unit (capacity, terminated pool, bad order)
        self.refused.setdefault(leaf.unit, set()).add(answer.host)
        self._warn(leaf.unit, f"{answer.host} refused it: {answer.reason}")
        if order.op == "deploy" and self._move(leaf.unit, reason=answer.reason):
            self._resend(leaf, order.op)
        else:
            self._op_failed(leaf, order.op, f"{answer.host} refused: {answer.reason}")

    def _step_down(self, seen: int) -> None:
        """Act no more: drop what this call queued (a save would overwrite the newer
        shepherd's record, orders would be fenced) and tell the driver."""
        self.superseded = seen
        self._actions = [a for a in self._actions if not isinstance(a, (SaveRecord, SendOrder))]
        self._actions.append(Superseded(seen))

    def _awaited(self, leaf: _Leaf) -> str | None:
        """The operation this leaf waits for a host to do: the head of its unit's rebuild,
        else the engine's."""
        chain = self.replays.get(leaf.unit)
        if chain:
            path, op = chain[0]
            return op if path == leaf.path else None
        return leaf.engine_op

    def _on_report(self, report: Report) -> None:
        leaf = self.leaves.get(report.path)
        if leaf is None or report.host != leaf.host:
            return  # a stale copy's news (it is released through the inventory)
        if report.op == "ended":
            self._leaf_lost(leaf, report.error or "ended")
            return
        chain = self.replays.get(leaf.unit)
        if chain and chain[0] == (leaf.path, report.op):
            chain.popleft()
            if report.error is not None:
                del self.replays[leaf.unit]
                self._leaf_lost(leaf, f"restart on {report.host} failed: {report.error}")
                return
            if leaf.engine_op == report.op:
                self._engine_done(leaf, None)
            self._continue_replay(leaf.unit)
            return
        if leaf.engine_op == report.op:
            self._engine_done(leaf, report.error)

    # =============================================================== failures and HA
    def _on_members(self, offers: tuple[HostOffer, ...], away: frozenset[str]) -> None:
        before = set(self.offers)
        self.offers = {offer.name: offer for offer in offers}
        for back in [host for host in self.away if host in self.offers]:
            del self.away[back]  # its agent is back: its inventory reconciles what it runs
            self.vouched.pop(back, None)
            self._save()
        for back in sorted((self.reclaiming | self.reclaimed) & set(self.offers)):
            if back in self.reclaiming:
                self._actions.append(CancelReclaim(back))
            self.reclaiming.discard(back)
            self.reclaimed.discard(back)
            self._wake(back)
        for host in sorted(away - set(self.offers) - set(self.away)):
            self._host_away(host)
        for gone in sorted(before - set(self.offers) - set(self.away)):
            self._lose(gone)

    def _lose(self, host: str) -> None:
        """``host`` is lost: its units move only once its reclaim completes (its lease
        surely ended, so it stopped their VMs), never before: two copies otherwise."""
        if host in self.reclaiming or host in self.reclaimed or host in self.offers:
            return
        if not any(h == host for h in self.placement.values()):
            return  # nothing of this pool there: nothing to wait for
        self.reclaiming.add(host)
        self._actions.append(ReclaimHost(host))

    def _on_reclaimed(self, host: str) -> None:
        """The lost host surely stopped its fenceable VMs: rebuild its units elsewhere (per
        their ``restart``; ``isolation "keep"`` ones wait for the host), and move the
        operations that waited for it."""
        if host not in self.reclaiming:
            return  # cancelled (it came back), or not asked by this core
        self.reclaiming.discard(host)
        if host in self.offers or host in self.away:
            return
        self.reclaimed.add(host)
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            leaves = [leaf for leaf in self.leaves.values() if leaf.unit == unit_path]
            if unit_path not in self.replays and all(
                leaf.state in ("created", "deploying", "terminated") for leaf in leaves
            ):
                continue  # nothing of it confirmed there: its waiting operations move it
            self._unit_down(unit_path, host)
        for leaf in list(self.leaves.values()):
            op = leaf.engine_op
            if (
                op is not None
                and self.placement.get(leaf.unit) == host
                and leaf.unit not in self.replays
            ):
                self._engine_op(leaf.path, op)

    def _wake(self, host: str) -> None:
        """``host`` is back: send again what waited for it (it answers at once for what it
        did already)."""
        for unit_path, chain in self.replays.items():
            if chain and self.placement.get(unit_path) == host:
                path, op = chain[0]
                self._send(self.leaves[path], op, host)
        for leaf in self.leaves.values():
            if (
                leaf.engine_op is not None
                and leaf.unit not in self.replays
                and self.placement.get(leaf.unit) == host
            ):
                self._send(leaf, leaf.engine_op, host)

    def _kept_in_isolation(self, unit_path: str) -> bool:
        """A unit whose host keeps it running without a lease (``isolation "keep"``): the
        mesh never rebuilds it while that host is lost."""
        unit = self.layout.units.get(unit_path)
        return unit is not None and unit.isolation == "keep"

    def _host_away(self, host: str) -> None:
        """A host left gracefully: its VMs keep running, so its units stay placed there for
        ``AWAY_GRACE``; only units with an operation under way there count as lost now (the
        host will not finish it). What it runs is vouched for in the saved record, so a later
        shepherd keeps it there too."""
        self.away[host] = self._now + AWAY_GRACE
        self._arm(f"away:{host}", AWAY_GRACE)
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            if unit_path in self.replays or any(
                leaf.unit == unit_path and leaf.engine_op is not None
                for leaf in self.leaves.values()
            ):
                self._unit_down(unit_path, host, "left in the middle of an operation")
        known = self.vouched.setdefault(host, {})
        for leaf in self.leaves.values():
            if self.placement.get(leaf.unit) != host or leaf.path in known:
                continue
            if not self.begun:
                # A fresh core learns of a leave it did not see (its predecessor died too):
                # a leaver finishes its operations first, so what the record places there
                # runs there. Wrong only for a pool still deploying; that costs a restart
                # after the grace, where rebuilding now would run the VM twice.
                known[leaf.path] = "running"
            elif leaf.state in ("deployed", "running") and leaf.engine_op is None:
                known[leaf.path] = leaf.state
        self._save()

    def _vouched_for(self, host: str, path: str, op: str) -> bool:
        state = self.vouched.get(host, {}).get(path)
        return state == "running" or (op == "deploy" and state == "deployed")

    def _host_down(self, host: str) -> None:
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            self._unit_down(unit_path, host)

    def _unit_down(self, unit_path: str, host: str, why: str = "died") -> None:
        leaves = [leaf for leaf in self.leaves.values() if leaf.unit == unit_path]
        unit = self.layout.units.get(unit_path)
        restart = unit.restart if unit is not None else "always"  # local leaves follow us
        active = [leaf for leaf in leaves if leaf.state not in ("created", "terminated")]
        if not active or self.engine.root.state.ended:
            return
        if self._kept_in_isolation(unit_path) and host not in self.offers:
            return  # its host keeps it running: it stays there until the host is back
        if self.state == "terminating":
            for leaf in active:
                if leaf.engine_op == "terminate":
                    self._engine_done(leaf, None)
            return
        if restart != "never" and self._move(unit_path, reason=f"{host} {why}"):
            self._replay_unit(unit_path)
            return
        for leaf in active:
            self._leaf_gone(leaf, f"its host {host} {why}")

    def _host_failed(self, leaf: _Leaf, op: str, reason: str) -> None:
        self._op_failed(leaf, op, reason)

    def _op_failed(self, leaf: _Leaf, op: str, reason: str) -> None:
        if self.replays.pop(leaf.unit, None) is None and leaf.engine_op == op:
            self._engine_done(leaf, reason)
        else:
            self._leaf_gone(leaf, reason)

    def _leaf_lost(self, leaf: _Leaf, reason: str) -> None:
        """A leaf's VM died (or its restart failed): restart per policy, else end it."""
        unit = self.layout.units.get(leaf.unit)
        restart = unit.restart if unit is not None else "never"
        if (
            restart != "never"
            and self.state != "terminating"
            and not self.engine.root.state.ended
            and leaf.engine_op != "terminate"
        ):
            host = self.placement.get(leaf.unit, "")
            self._warn(leaf.unit, f"restarting ({reason})")
            if reason.startswith("restart on"):  # it failed there: try another host
                self.refused.setdefault(leaf.unit, set()).add(host)
                keep = None
            else:
                keep = host
            if self._move(leaf.unit, reason=reason, keep=keep):
                self._replay_unit(leaf.unit)
                return
        self._leaf_gone(leaf, reason)

    def _leaf_gone(self, leaf: _Leaf, reason: str) -> None:
        record = lm.TerminationRecord.abnormal(reason, leaf.path)
        if leaf.engine_op is not None:
            self._engine_done(leaf, reason)
        else:
            self._feed(lm.LeafEnded(leaf.path, record))

    def _move(self, unit_path: str, *, reason: str, keep: str | None = None) -> bool:
        """Place a unit again (elsewhere, unless ``keep`` is live and admits it); bump the
        generation so copies left behind are stale, and save before any order uses it."""
        unit = self.layout.units.get(unit_path)
        old = self.placement.pop(unit_path, None)
        if unit is None:  # a local leaf: it runs beside us
            self.placement[unit_path] = self.me
            chosen: str | None = self.me
        else:
            units, offers = self.layout.units, self.offers
            others = {u: h for u, h in self.placement.items() if u in units and h in offers}
            exclude = set(self.refused.get(unit_path, set()))
            if keep is None and old is not None:
                exclude.add(old)
            if keep is not None and keep in self.offers:
                exclude.discard(keep)
            demand = _with_preference(unit.demand, keep)
            plan = place(
                [u.demand for u in self.layout.units.values() if u.path in others] + [demand],
                self.offers.values(),
                exclude=exclude,
                already=others,
            )
            chosen = plan.assignments.get(unit_path)
            if chosen is None:
                why = plan.unplaced[0].reason if plan.unplaced else "no host"
                self._warn(unit_path, f"cannot be placed again ({reason}): {why}")
                if old is not None:
                    self.placement[unit_path] = old
                return False
            self.placement[unit_path] = chosen
        if old is not None and old != chosen:
            self.generation += 1
        self._save()
        return True

    def _replay_unit(self, unit_path: str) -> None:
        """Redo on the unit's new host what the engine believes is done: every deployed
        leaf's deploy in order, then every started leaf's start (a disk before its VM)."""
        host = self.placement[unit_path]
        leaves = [leaf for leaf in self.leaves.values() if leaf.unit == unit_path]
        for leaf in leaves:
            leaf.host = host
        chain = deque(
            [(leaf.path, "deploy") for leaf in leaves if leaf.state != "created"]
            + [(leaf.path, "start") for leaf in leaves if leaf.state in ("starting", "running")]
        )
        self.replays[unit_path] = chain
        self._continue_replay(unit_path)

    def _continue_replay(self, unit_path: str) -> None:
        chain = self.replays.get(unit_path)
        if chain:
            path, op = chain[0]
            self._send(self.leaves[path], op, self.placement[unit_path])
            return
        self.replays.pop(unit_path, None)
        for leaf in self.leaves.values():
            if leaf.unit == unit_path and leaf.engine_op is not None:
                self._send(leaf, leaf.engine_op, self.placement[unit_path])

    def _resend(self, leaf: _Leaf, op: str) -> None:
        host = self.placement.get(leaf.unit)
        if host is not None:
            self._send(leaf, op, host)

    def _resend_all(self) -> None:
        for unit_path, chain in self.replays.items():
            if chain:
                path, op = chain[0]
                self._send(self.leaves[path], op, self.placement[unit_path])
        for leaf in self.leaves.values():
            if leaf.engine_op is not None and leaf.unit not in self.replays:
                self._send(leaf, leaf.engine_op, leaf.host)

    # ============================================================== reconciliation
    def _on_inventory(self, inventory: Inventory) -> None:
        """Release what a host runs but should not (stale copies after a move or a
        partition); leaves it should run but lost are handled as lost."""
        for path in sorted(inventory.leaves, reverse=True):
            leaf = self.leaves.get(path)
            placed = self.placement.get(leaf.unit) if leaf is not None else None
            if leaf is None or placed != inventory.host or self.engine.root.state.ended:
                self._actions.append(
                    SendOrder(
                        inventory.host,
                        Order(
                            self.pool,
                            self.generation,
                            self.me,
                            self.digest,
                            path,
                            "terminate",
                            leaf.unit if leaf else path,
                        ),
                    )
                )
        for leaf in self.leaves.values():
            if (
                self.placement.get(leaf.unit) == inventory.host
                and leaf.state == "running"
                and leaf.engine_op is None
                and leaf.unit not in self.replays
                and (
                    leaf.path not in inventory.leaves
                    or inventory.states.get(leaf.path, "running") == "deployed"
                )
            ):
                # Not listed, or listed as defined but not running: its VM died and the
                # death report was lost.
                self._leaf_lost(leaf, f"{inventory.host} no longer runs it")

    # ========================================================================= misc
    def _on_timer(self, name: str) -> None:
        engine_timer = self._engine_timers.pop(name, None)
        if engine_timer is not None:
            self._feed(lm.TimerFired(*engine_timer))
        elif name.startswith("away:"):
            gone = name[5:]
            ends = self.away.get(gone)
            if ends is not None and ends <= self._now and gone not in self.offers:
                del self.away[gone]  # not back in time: its units are lost, as if it died
                self.vouched.pop(gone, None)
                self._lose(gone)  # once its (leave's) lease surely ended
                self._save()
        elif name.startswith("retry:"):
            path, op = name[6:].rsplit(":", 1)
            leaf = self.leaves.get(path)
            chain = self.replays.get(leaf.unit) if leaf is not None else None
            if leaf is not None and (leaf.engine_op == op or (chain and chain[0] == (path, op))):
                host = self.placement.get(leaf.unit)
                if host is not None:
                    self._send(leaf, op, host)

    def _arm(self, name: str, delay: float) -> None:
        self._actions.append(SetTimer(name, self._now + delay))

    def _save(self) -> None:
        self._actions = [a for a in self._actions if not isinstance(a, SaveRecord)] + [
            SaveRecord(self.record())
        ]

    def _set_pool(self, state: str, reason: str = "") -> None:
        if state == self.state and reason == self.reason:
            return
        self.state = state
        if reason:
            self.reason = reason
        self._actions.append(PoolChanged(state, reason))

    def _warn(self, path: str, message: str) -> None:
        self._actions.append(Warning(path, message))


def _with_preference(demand: Demand, host: str | None) -> Demand:
    """Restarting in place: the same demand, pinned to its old host when it is still live."""
    if host is None:
        return demand
    return replace(demand, pinned=host)  # every other field kept (disk_mib too)


def unit_of(layout: Layout, path: str) -> Unit | None:
    unit_path = layout.unit_of.get(path)
    return layout.units.get(unit_path) if unit_path else None
