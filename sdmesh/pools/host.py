"""The host core: this host's share of every pool, as events in and actions out.

A host is the authority for what it runs. It admits a unit (a VM and its disks) on the unit's
first order only if its real capacity, minus what it already promised, can hold it, so
several shepherds placing at once can never overcommit it. It refuses orders from an older
generation than it has seen for the pool (fencing), and answers again, at once, for work it
has already done, so a new shepherd replaying the lifecycle never starts anything twice. A
pool's termination record makes it tear down everything of that pool, whoever asks. A host
whose agent is leaving admits nothing new (what it already runs stays, and keeps running
after the agent is gone), and says what it holds so a successor can trust it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sdmesh.pools.records import Order, PoolRecord, Report

# ------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class OrderReceived:
    """``veto``: why the driver will not let this host take on a new unit now (no lease to
    run a restartable VM, say); applied only where the order would admit one, so what the
    host already runs is answered for as ever."""

    order: Order
    veto: str | None = None


@dataclass(frozen=True)
class LeafFinished:
    """The driver finished an operation it was asked to run (``error`` if it failed)."""

    pool: str
    path: str
    op: str
    error: str | None = None


@dataclass(frozen=True)
class LeafDied:
    """A leaf ended by itself: its VM crashed or was destroyed outside sdmesh."""

    pool: str
    path: str
    reason: str


@dataclass(frozen=True)
class PoolTerminated:
    """The pool's termination record reached this host (gossip or DHT).

    ``generation``: the newest generation of the pool the record was issued against; it
    ends what was ordered up to it, never a later resubmission under the same name. None
    (the reaper, a pool nobody knows) ends everything held of the pool."""

    pool: str
    generation: int | None = None


@dataclass(frozen=True)
class Recovered:
    """A leaf found in libvirt after an agent restart (from domain metadata), or a disk found
    by its volume's tags. ``state``: ``running``, or ``deployed`` for a domain that is
    defined but not running (the shepherd restarts it per its policy)."""

    pool: str
    path: str
    unit: str
    generation: int
    shepherd: str
    vcpus: int = 0
    memory_mib: int = 0
    state: str = "running"
    #: Found by its tags only (a disk): its component is not in the driver's memory, so
    #: the first deploy ordered runs again (adopting what exists) before anything needs it.
    adopt: bool = False


@dataclass(frozen=True)
class CapacityChanged:
    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class Leaving:
    """The agent is leaving the mesh: admit no new unit (a shepherd places it elsewhere)."""


Event = (
    OrderReceived | LeafFinished | LeafDied | PoolTerminated | Recovered | CapacityChanged | Leaving
)

# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Answer:
    """The immediate answer to an order: accepted, refused (why) or fenced (what we saw)."""

    order: Order
    outcome: str
    reason: str = ""
    seen: int = 0


@dataclass(frozen=True)
class RunLeaf:
    pool: str
    path: str
    op: str
    generation: int


@dataclass(frozen=True)
class SendReport:
    shepherd: str
    report: Report


Action = Answer | RunLeaf | SendReport

DEFAULT_VCPU_RATIO = 4.0


@dataclass
class _Leaf:
    unit: str
    state: str = "new"  # new, deploying, deployed, starting, running, terminating
    op: str | None = None
    then: list[str] = field(default_factory=list)  # operations queued behind ``op``
    generation: int = 0
    #: Recovered by its tags, its component not rebuilt yet (``Recovered.adopt``).
    adopt: bool = False


@dataclass
class _Unit:
    vcpus: int
    memory_mib: int
    leaves: set[str] = field(default_factory=set)


@dataclass
class _Pool:
    generation: int = -1
    shepherd: str = ""
    leaves: dict[str, _Leaf] = field(default_factory=dict)
    units: dict[str, _Unit] = field(default_factory=dict)
    #: Generations up to this one are terminated (-1: none): a resubmission starts above.
    tomb: int = -1

    @property
    def terminated(self) -> bool:
        """The generation this host follows now is covered by a termination record."""
        return self.tomb >= 0 and self.generation <= self.tomb


class HostCore:
    """One host: admission, fencing and idempotent leaf operations for every pool."""

    def __init__(
        self, name: str, vcpus: int, memory_mib: int, vcpu_ratio: float = DEFAULT_VCPU_RATIO
    ) -> None:
        self.name = name
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.vcpu_ratio = vcpu_ratio
        self.pools: dict[str, _Pool] = defaultdict(_Pool)
        self.leaving = False
        self._actions: list[Action] = []

    # ======================================================================= interface
    def handle(self, event: Event) -> list[Action]:
        self._actions = []
        if isinstance(event, OrderReceived):
            self._on_order(event.order, event.veto)
        elif isinstance(event, LeafFinished):
            self._on_finished(event)
        elif isinstance(event, LeafDied):
            self._on_died(event)
        elif isinstance(event, PoolTerminated):
            self._on_terminated(event.pool, event.generation)
        elif isinstance(event, Recovered):
            self._on_recovered(event)
        elif isinstance(event, CapacityChanged):
            self.vcpus, self.memory_mib = event.vcpus, event.memory_mib
        elif isinstance(event, Leaving):
            self.leaving = True
        actions, self._actions = self._actions, []
        return actions

    @property
    def committed(self) -> tuple[int, int]:
        """vCPUs and MiB promised to admitted units, over every pool."""
        units = [u for pool in self.pools.values() for u in pool.units.values()]
        return sum(u.vcpus for u in units), sum(u.memory_mib for u in units)

    def inventory(self, pool: str) -> dict[str, int]:
        """Leaves of ``pool`` this host holds (deployed or further): path -> generation."""
        state = self.pools.get(pool)
        if state is None:
            return {}
        return {
            path: leaf.generation
            for path, leaf in state.leaves.items()
            if leaf.state not in ("new", "terminating")
        }

    def states(self, pool: str) -> dict[str, str]:
        """The state of each leaf :meth:`inventory` lists: a VM that died shows ``deployed``
        (defined, not running), so the shepherd's reconciliation notices a lost death report."""
        state = self.pools.get(pool)
        if state is None:
            return {}
        return {
            path: leaf.state
            for path, leaf in state.leaves.items()
            if leaf.state not in ("new", "terminating")
        }

    def resubmitted(self, order: Order) -> bool:
        """``order`` is the first of a new submission of an ended pool's name (above its
        termination, above every generation seen): what was cached for the name (its
        descriptor, tree, host context) belongs to the pool before."""
        state = self.pools.get(order.pool)
        return (
            state is not None
            and state.terminated  # still following the ended pool: the first order above
            and order.op != "terminate"
            and order.generation > state.tomb
        )

    def forget(self, pool: str) -> bool:
        """Drop the bookkeeping of a pool this host no longer holds anything of (its end is
        past retention); False, and nothing dropped, while it still holds some leaf."""
        state = self.pools.get(pool)
        if state is None:
            return True
        if state.leaves:
            return False
        del self.pools[pool]
        return True

    def holdings(self, pool: str) -> dict[str, str]:
        """Leaves of ``pool`` settled here (no operation under way): path -> ``deployed`` or
        ``running``. What a leaving host vouches for to the pool's next shepherd."""
        state = self.pools.get(pool)
        if state is None:
            return {}
        return {
            path: leaf.state
            for path, leaf in state.leaves.items()
            if leaf.op is None and not leaf.then and leaf.state in ("deployed", "running")
        }

    def busy(self) -> bool:
        """Some leaf operation is under way (or queued) on this host."""
        return any(
            leaf.op is not None or leaf.then
            for pool in self.pools.values()
            for leaf in pool.leaves.values()
        )

    def pools_held(self) -> list[str]:
        return sorted(name for name, pool in self.pools.items() if pool.leaves)

    def shepherd_of(self, pool: str) -> str:
        state = self.pools.get(pool)
        return state.shepherd if state is not None else ""

    # ========================================================================= orders
    def _on_order(self, order: Order, veto: str | None = None) -> None:
        pool = self.pools[order.pool]
        if order.generation < pool.generation or (
            order.generation == pool.generation and order.shepherd != pool.shepherd
        ):
            self._answer(order, "fenced", f"generation {pool.generation} already seen", pool)
            return
        pool.generation, pool.shepherd = order.generation, order.shepherd
        leaf = pool.leaves.get(order.path)
        if order.op == "terminate":
            self._answer(order, "accepted", "", pool)
            self._terminate(order.pool, pool, order.path)
            return
        if order.generation <= pool.tomb:
            self._answer(order, "refused", "the pool was terminated", pool)
            return
        if leaf is None:
            if order.op != "deploy":
                self._answer(order, "refused", f"{order.path} is not deployed here", pool)
                return
            unit = pool.units.get(order.unit)
            if unit is None:
                if self.leaving:
                    problem: str | None = f"{self.name} is leaving the mesh"
                else:
                    problem = veto or self._admit(order)
                if problem is not None:
                    self._answer(order, "refused", problem, pool)
                    return
                unit = pool.units[order.unit] = _Unit(order.vcpus, order.memory_mib)
            unit.leaves.add(order.path)
            leaf = pool.leaves[order.path] = _Leaf(order.unit, generation=order.generation)
        leaf.generation = order.generation
        self._answer(order, "accepted", "", pool)
        self._operate(order.pool, pool, order.path, leaf, order.op)

    def _admit(self, order: Order) -> str | None:
        vcpus, memory = self.committed
        if memory + order.memory_mib > self.memory_mib:
            return (
                f"{self.name} has {max(self.memory_mib - memory, 0)} MiB left to promise, "
                f"{order.unit} needs {order.memory_mib}"
            )
        if order.vcpus > self.vcpus:
            return f"{self.name} has {self.vcpus} CPUs, {order.unit} needs {order.vcpus} vCPUs"
        if vcpus + order.vcpus > int(self.vcpus * self.vcpu_ratio):
            left = max(int(self.vcpus * self.vcpu_ratio) - vcpus, 0)
            return f"{self.name} has {left} vCPUs left to promise, {order.unit} needs {order.vcpus}"
        return None

    def _operate(self, name: str, pool: _Pool, path: str, leaf: _Leaf, op: str) -> None:
        done_states = {"deploy": ("deployed", "starting", "running"), "start": ("running",)}
        if leaf.op is not None:
            if leaf.op != op and op not in leaf.then:
                leaf.then.append(op)  # runs after the operation in flight
            return  # either way the report goes out when it is done
        if leaf.state in done_states[op] and not (op == "deploy" and leaf.adopt):
            self._report(name, pool, path, op, None)  # done already: say so again
            return
        if op == "start" and leaf.state == "new":
            self._report(name, pool, path, op, "not deployed here")
            return
        self._run(name, pool, path, leaf, op)

    def _run(self, name: str, pool: _Pool, path: str, leaf: _Leaf, op: str) -> None:
        if op == "deploy":
            # A disk found by its tags is deployed again (adopting its volume) before its
            # VM's deploy, which needs it, can run: "done already" would be a lie.
            leaf.adopt = False
        leaf.op = op
        leaf.state = {"deploy": "deploying", "start": "starting", "terminate": "terminating"}[op]
        self._actions.append(RunLeaf(name, path, op, leaf.generation))

    def _terminate(self, name: str, pool: _Pool, path: str) -> None:
        leaf = pool.leaves.get(path)
        if leaf is None:
            self._report(name, pool, path, "terminate", None)  # nothing here: done
            return
        if leaf.op == "terminate":
            return
        if leaf.op is not None:
            leaf.then = ["terminate"]
            return
        self._run(name, pool, path, leaf, "terminate")

    # ===================================================================== outcomes
    def _on_finished(self, event: LeafFinished) -> None:
        pool = self.pools.get(event.pool)
        leaf = pool.leaves.get(event.path) if pool is not None else None
        if pool is None or leaf is None or leaf.op != event.op:
            return
        leaf.op = None
        if event.op == "terminate":
            self._forget(pool, event.path, leaf)
        elif event.error is not None:
            # A failed deploy or start leaves nothing running; the shepherd decides the rest
            # (it orders a terminate to clean up whatever the attempt created).
            leaf.state = "deployed" if event.op == "start" else "new"
        else:
            leaf.state = "deployed" if event.op == "deploy" else "running"
        self._report(event.pool, pool, event.path, event.op, event.error)
        if leaf.then and event.path in pool.leaves:
            following = leaf.then.pop(0)
            if following == "terminate":
                self._run(event.pool, pool, event.path, leaf, "terminate")
            else:
                self._operate(event.pool, pool, event.path, leaf, following)
        elif event.path in pool.leaves and event.op != "terminate" and leaf.generation <= pool.tomb:
            self._run(event.pool, pool, event.path, leaf, "terminate")

    def _forget(self, pool: _Pool, path: str, leaf: _Leaf) -> None:
        del pool.leaves[path]
        unit = pool.units.get(leaf.unit)
        if unit is not None:
            unit.leaves.discard(path)
            if not unit.leaves:
                del pool.units[leaf.unit]  # its reservation is free again

    def _on_died(self, event: LeafDied) -> None:
        pool = self.pools.get(event.pool)
        leaf = pool.leaves.get(event.path) if pool is not None else None
        if pool is None or leaf is None or leaf.state not in ("running", "starting"):
            return
        leaf.state = "deployed"  # defined but not running: a terminate cleans it up
        self._actions.append(
            SendReport(
                pool.shepherd,
                Report(event.pool, pool.generation, self.name, event.path, "ended", event.reason),
            )
        )

    def _on_terminated(self, name: str, generation: int | None) -> None:
        pool = self.pools.get(name)
        if pool is None:
            return  # never held here: nothing to end, nothing to remember
        if generation is None:
            generation = max([pool.generation, *(leaf.generation for leaf in pool.leaves.values())])
        pool.tomb = max(pool.tomb, generation)
        # VMs before their disks: each unit's leaves in reverse order of creation.
        covered = [p for p, leaf in pool.leaves.items() if leaf.generation <= pool.tomb]
        newest_first = sorted(covered, reverse=True)
        for path in sorted(newest_first, key=lambda p: 0 if p == pool.leaves[p].unit else 1):
            self._terminate(name, pool, path)

    def _on_recovered(self, event: Recovered) -> None:
        pool = self.pools[event.pool]
        if event.generation > pool.generation:
            pool.generation, pool.shepherd = event.generation, event.shepherd
        unit = pool.units.setdefault(event.unit, _Unit(event.vcpus, event.memory_mib))
        unit.leaves.add(event.path)
        state = event.state if event.state in ("running", "deployed") else "running"
        pool.leaves[event.path] = _Leaf(
            event.unit, state, generation=event.generation, adopt=event.adopt
        )

    def _answer(self, order: Order, outcome: str, reason: str, pool: _Pool) -> None:
        self._actions.append(Answer(order, outcome, reason, pool.generation))

    def _report(self, name: str, pool: _Pool, path: str, op: str, error: str | None) -> None:
        if pool.shepherd:
            self._actions.append(
                SendReport(pool.shepherd, Report(name, pool.generation, self.name, path, op, error))
            )


# ------------------------------------------------------------------------------ reaper

#: Pool states after which nothing of the pool should run anywhere.
ENDED_STATES = ("terminated", "failed")


class Reaper:
    """Decides when leftovers of a pool this host holds may be torn down.

    Leftovers are what a host still runs of a pool whose record says it ended (terminated or
    failed: the host was cut off while it ended, or came back after its tombstone expired),
    or of a pool the DHT definitely does not know. A wrong verdict deletes a live pool's VMs,
    so every verdict needs a majority of the mesh in this agent's view and a DHT lookup that
    answered, continuously for ``grace`` seconds: a cut-off or freshly started agent, or a
    DHT that cannot be reached, keeps what it runs."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._since: dict[str, float] = {}

    def judge(
        self,
        pool: str,
        now: float,
        *,
        quorate: bool,
        answered: bool,
        record: PoolRecord | None,
    ) -> PoolTerminated | None:
        """``answered``: the DHT lookup of the pool's record really answered (``record``
        None then means definitely not found). The tear-down to apply, or None for now."""
        if not quorate or not answered:
            self._since.pop(pool, None)  # no evidence: the grace starts again afterwards
            return None
        if record is None:
            through: int | None = None
        elif record.state in ENDED_STATES:
            through = record.generation
        else:
            self._since.pop(pool, None)  # a live pool: its shepherd reconciles
            return None
        first = self._since.setdefault(pool, now)
        if now - first < self.grace:
            return None
        return PoolTerminated(pool, through)

    def forget(self, pool: str) -> None:
        self._since.pop(pool, None)

    def watched(self) -> list[str]:
        return sorted(self._since)
