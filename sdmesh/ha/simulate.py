"""A discrete-event simulation of lease cores under cuts, kills and drifting clocks.

It checks the one promise leases make: *a VM's old host has stopped it before any other
host starts it*, whatever the partitions, and for every clock whose rate stays within the
assumed drift. Each node runs a ``LeaseCore`` on its own clock (an offset and a rate within
``1 +- drift`` of real time); messages take a random delay and may be lost; a cut splits
the nodes into groups that hear only each other; a kill freezes an agent while its VMs run
on until its fence guard's deadline. The shepherd side is modelled plainly: the leader of a
majority group reclaims every host outside it after a detection delay, and, to show that
safety never rests on that detector, random nodes also reclaim random healthy hosts.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field

from sdmesh.ha import lease as ls
from sdmesh.ha.timing import LeaseTiming


@dataclass
class SimConfig:
    nodes: int = 5
    vms_per_node: int = 2
    witness: bool = False
    """Add a witness: a voter that runs no VM."""
    duration: float = 600.0
    drift: float = 0.01
    """Clock rates are drawn within this bound (the timing assumes ``timing.drift``)."""
    extreme_rates: bool = True
    """Draw rates only from the two ends of the bound (the worst case), not uniformly."""
    loss: float = 0.01
    delay: tuple[float, float] = (0.0002, 0.005)
    fault_every: tuple[float, float] = (15.0, 40.0)
    fault_length: tuple[float, float] = (3.0, 30.0)
    detect: tuple[float, float] = (2.0, 5.0)
    boot: tuple[float, float] = (0.3, 1.2)
    stop_fraction: float = 0.9
    """VMs stop within this fraction of the stop allowance (real seconds)."""
    false_reclaims: float = 0.02
    """Per second: a random node reclaims a random other (healthy) host."""
    timing: LeaseTiming = field(default_factory=LeaseTiming)


@dataclass
class SimResult:
    overlaps: int = 0
    starts: int = 0
    faults: int = 0
    rebuild_times: list[float] = field(default_factory=list)
    """Real seconds from a cut or kill to each lost VM running elsewhere."""
    fences: int = 0

    def summary(self) -> str:
        times = sorted(self.rebuild_times)
        if times:
            q = statistics.quantiles(times, n=20) if len(times) > 1 else [times[0]] * 19
            spread = f"rebuild p50 {q[9]:.2f} s, p95 {q[18]:.2f} s, max {times[-1]:.2f} s"
        else:
            spread = "no rebuilds"
        return (
            f"{self.faults} faults, {self.starts} starts, {self.fences} fences, "
            f"{len(times)} rebuilds ({spread}), overlaps {self.overlaps}"
        )


@dataclass
class _Node:
    name: str
    core: ls.LeaseCore
    offset: float
    rate: float
    alive: bool = True
    guard_deadline: float | None = None  # local clock
    timers: dict[str, int] = field(default_factory=dict)
    saved: ls.VoterState = field(default_factory=ls.VoterState)

    def local(self, real: float) -> float:
        return self.offset + self.rate * real

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate


class LeaseSimulation:
    def __init__(self, config: SimConfig, seed: int) -> None:
        self.cfg = config
        self.rng = random.Random(seed)
        names = [f"h{i:02d}" for i in range(config.nodes)]
        self.hosts = list(names)
        if config.witness:
            names.append("witness")
        self.names = names
        self.nodes = {name: self._new_node(name, ls.VoterState()) for name in names}
        self.groups: dict[str, int] = dict.fromkeys(names, 0)
        self.now = 0.0
        self._queue: list[tuple[float, int, str, tuple[object, ...]]] = []
        self._seq = 0
        self.result = SimResult()
        # VM state: which host runs it, which host it is assigned to
        self.running: dict[str, set[str]] = {}
        self.assigned: dict[str, str] = {}
        self.lost_since: dict[str, float] = {}
        self.limbo: dict[str, tuple[str, str]] = {}
        """VMs whose shepherd is reclaiming their host: (asker, holder). It orders nothing
        for them meanwhile, and starts in flight to the holder are called off (the pool
        layer's contract: no order to the holder outstanding once a reclaim begins)."""
        self.pending: dict[str, int] = {}
        """The current start order of each VM (older ones in the queue are void)."""
        for host in self.hosts:
            for i in range(config.vms_per_node):
                vm = f"{host}-vm{i}"
                self.running[vm] = set()
                self.assigned[vm] = host
                self._order(vm, host, 2.0 + self.rng.random(), None)

    def _new_node(self, name: str, saved: ls.VoterState) -> _Node:
        lo, hi = 1.0 - self.cfg.drift, 1.0 + self.cfg.drift
        rate = self.rng.choice((lo, hi)) if self.cfg.extreme_rates else self.rng.uniform(lo, hi)
        core = ls.LeaseCore(name, self.cfg.timing, saved, nonce=str(self.rng.random()))
        return _Node(name, core, self.rng.uniform(0, 1000), rate, saved=saved)

    # ------------------------------------------------------------ event queue
    def _at(self, real: float, kind: str, payload: tuple[object, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (real, self._seq, kind, payload))

    def run(self) -> SimResult:
        for node in self.nodes.values():
            self._feed(node, ls.Start(frozenset(self.names), None))
        self._at(self.rng.uniform(*self.cfg.fault_every), "fault", ())
        self._at(5.0, "reconcile", ())
        if self.cfg.false_reclaims > 0:
            self._at(self.rng.expovariate(self.cfg.false_reclaims), "false-reclaim", ())
        while self._queue:
            real, _, kind, payload = heapq.heappop(self._queue)
            if real > self.cfg.duration:
                break
            self.now = real
            getattr(self, "_on_" + kind.replace("-", "_"))(*payload)
        return self.result

    def _order(self, vm: str, host: str, at: float, since: float | None) -> None:
        order = self.pending[vm] = self.pending.get(vm, 0) + 1
        self._at(at, "start", (vm, host, since, order))

    def _reclaim(self, asker: str, holder: str) -> None:
        for vm, host in self.assigned.items():
            if host == holder and vm not in self.limbo:
                self.limbo[vm] = (asker, holder)
                self.pending[vm] = self.pending.get(vm, 0) + 1  # calls off a start in flight
        self._feed(self.nodes[asker], ls.Reclaim(holder))

    def _feed(self, node: _Node, event: ls.Event, at_least: float = 0.0) -> None:
        if not node.alive:
            return
        # Rounding must not make a timer fire a hair early on its own clock (it would re-arm).
        for action in node.core.handle(event, max(node.local(self.now), at_least)):
            self._execute(node, action)

    def _execute(self, node: _Node, action: ls.Action) -> None:
        if isinstance(action, ls.Send):
            if self.rng.random() >= self.cfg.loss:
                delay = self.rng.uniform(*self.cfg.delay)
                self._at(self.now + delay, "deliver", (node.name, action.to, action.message))
        elif isinstance(action, ls.SetTimer):
            generation = node.timers.get(action.name, 0) + 1
            node.timers[action.name] = generation
            when = max(self.now, node.real(action.at))
            payload = (node.name, action.name, generation, node.core, action.at)
            self._at(when, "timer", payload)
        elif isinstance(action, ls.LeaseValid):
            node.guard_deadline = action.fence_at
        elif isinstance(action, ls.Isolated):
            node.guard_deadline = None
            self._fence(node.name)
        elif isinstance(action, ls.Reclaimed):
            self._rebuild(node.name, action.holder)
        else:
            node.saved = action.state

    # ------------------------------------------------------------ handlers
    def _on_timer(
        self, name: str, timer: str, generation: int, core: ls.LeaseCore, at: float
    ) -> None:
        node = self.nodes[name]
        if node.core is core and node.timers.get(timer) == generation:
            self._feed(node, ls.TimerFired(timer), at)

    def _on_deliver(self, src: str, dst: str, message: ls.Message) -> None:
        if self.groups[src] == self.groups[dst] and self.nodes[src].alive:
            self._feed(self.nodes[dst], ls.Received(message))

    def _on_guard(self, name: str, core: ls.LeaseCore) -> None:
        node = self.nodes[name]
        deadline = node.guard_deadline
        # The guard fires on its own clock (the event time converts back within rounding).
        if node.core is core and not node.alive and deadline is not None:
            node.guard_deadline = None
            self._fence(name)

    def _on_fault(self) -> None:
        self.result.faults += 1
        cfg = self.cfg
        length = self.rng.uniform(*cfg.fault_length)
        kind = self.rng.choice(("cut", "kill", "split"))
        if kind == "split":
            shuffled = self.rng.sample(self.names, len(self.names))
            cut = self.rng.randint(1, len(self.names) - 1)
            lost = shuffled[:cut]
        else:
            lost = [self.rng.choice(self.hosts)]
        for name in lost:
            self.groups[name] = 1
        if kind == "kill":
            node = self.nodes[lost[0]]
            node.alive = False
            if node.guard_deadline is not None:
                self._at(
                    max(self.now, node.real(node.guard_deadline)), "guard", (node.name, node.core)
                )
        for vm, host in self.assigned.items():
            if host in lost and vm not in self.lost_since:
                self.lost_since[vm] = self.now
        majority_side = [n for n in self.names if self.groups[n] == 0]
        if 2 * len(majority_side) <= len(self.names):
            majority_side = [n for n in self.names if self.groups[n] == 1]
            lost = [n for n in self.names if self.groups[n] == 0]
        if 2 * len(majority_side) > len(self.names):
            leader = min(majority_side)
            for name in lost:
                self._at(self.now + self.rng.uniform(*cfg.detect), "reclaim", (leader, name))
        self._at(self.now + length, "heal", (kind, lost[0] if kind == "kill" else ""))
        self._at(self.now + length + self.rng.uniform(*cfg.fault_every), "fault", ())

    def _on_heal(self, kind: str, killed: str) -> None:
        self.groups = dict.fromkeys(self.names, 0)
        self.lost_since.clear()
        if kind == "kill":
            old = self.nodes[killed]
            inherited = old.guard_deadline
            fresh = self._new_node(killed, old.saved)
            fresh.offset, fresh.rate = old.offset, old.rate  # same host, same clock
            fresh.guard_deadline = inherited
            self.nodes[killed] = fresh
            self._feed(fresh, ls.Start(frozenset(self.names), inherited))
        for node in self.nodes.values():
            for name in self.names:
                self._feed(node, ls.CancelReclaim(name))
        self.limbo.clear()

    def _on_reclaim(self, asker: str, holder: str) -> None:
        if self.groups[asker] != self.groups[holder] or kind_is_kill(self, holder):
            self._reclaim(asker, holder)

    def _on_false_reclaim(self) -> None:
        asker, holder = self.rng.sample(self.names, 2)
        self._reclaim(asker, holder)
        self._at(self.now + self.rng.expovariate(self.cfg.false_reclaims), "false-reclaim", ())

    # ------------------------------------------------------------ VMs
    def _fence(self, host: str) -> None:
        self.result.fences += 1
        stop = self.rng.uniform(0, self.cfg.stop_fraction * self.cfg.timing.stop_allowance)
        for vm, hosts in self.running.items():
            if host in hosts:
                self._at(self.now + stop, "stopped", (vm, host))

    def _on_stopped(self, vm: str, host: str) -> None:
        self.running[vm].discard(host)

    def _rebuild(self, asker: str, holder: str) -> None:
        targets = [
            name
            for name in self.hosts
            if name != holder and self.groups[name] == self.groups[asker] and self.nodes[name].alive
        ]
        for vm, host in self.assigned.items():
            if self.limbo.get(vm) == (asker, holder) and host == holder and targets:
                del self.limbo[vm]
                target = self.rng.choice(targets)
                self.assigned[vm] = target
                since = self.lost_since.pop(vm, None)
                self._order(vm, target, self.now + self.rng.uniform(*self.cfg.boot), since)

    def _on_start(self, vm: str, host: str, since: float | None, order: int) -> None:
        node = self.nodes[host]
        if self.pending.get(vm) != order or self.assigned[vm] != host or host in self.running[vm]:
            return
        if not node.alive or not node.core.may_run(node.local(self.now)):
            self._at(self.now + 1.0, "start", (vm, host, since, order))  # it asks its lease
            return
        self.result.starts += 1
        if self.running[vm]:
            self.result.overlaps += 1
        self.running[vm].add(host)
        if since is not None:
            self.result.rebuild_times.append(self.now - since)

    def _on_reconcile(self) -> None:
        """The host's own report: a VM it stopped (fenced) is started again where assigned."""
        for vm, hosts in self.running.items():
            if not hosts and vm not in self.limbo:
                boot = self.now + self.rng.uniform(*self.cfg.boot)
                self._order(vm, self.assigned[vm], boot, None)
        self._at(self.now + 5.0, "reconcile", ())


def kind_is_kill(sim: LeaseSimulation, name: str) -> bool:
    """A killed agent is reclaimed even if its network is fine (it answers nothing)."""
    return not sim.nodes[name].alive


def simulate(config: SimConfig, seed: int) -> SimResult:
    return LeaseSimulation(config, seed).run()
