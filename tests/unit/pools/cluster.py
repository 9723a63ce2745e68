"""A deterministic cluster for the pool cores: hosts, shepherds and a message network.

Every host is a :class:`HostCore` whose leaf operations finish after a fixed delay; shepherds
are :class:`Shepherd` cores; messages (orders, answers, reports) travel with a latency and can
be cut by partitions, host deaths or graceful leaves (the agent goes, its VMs stay). Nothing
here is asyncio: a heap of timed events.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sdmesh.language import resolve_text
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.layout import layout
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import Order, PoolRecord, Report

LATENCY = 0.001
OP_SECONDS = {"deploy": 0.05, "start": 0.1, "terminate": 0.02}


@dataclass
class SimHost:
    name: str
    core: hc.HostCore
    alive: bool = True
    #: The agent left gracefully: nothing reaches it, but its VMs keep running.
    left: bool = False
    #: Leaves that really exist here (what libvirt would list): (pool, path) -> running?
    real: dict[tuple[str, str], bool] = field(default_factory=dict)
    started: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_memory: int = 0


class Cluster:
    def __init__(self, hosts: dict[str, tuple[int, int]]) -> None:
        """``hosts``: name -> (vcpus, memory MiB)."""
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.hosts = {
            name: SimHost(name, hc.HostCore(name, vcpus, memory))
            for name, (vcpus, memory) in hosts.items()
        }
        self.shepherds: dict[tuple[str, str], sc.Shepherd] = {}  # (pool, shepherd host)
        self.dht: dict[str, PoolRecord] = {}
        self.cut: set[frozenset[str]] = set()
        self.log: list[str] = []
        self.warnings: list[str] = []
        self.handoffs: list[tuple[str, sc.HandOff]] = []
        #: (pool, host) of each core that stepped down when a host fenced it.
        self.step_downs: list[tuple[str, str, int]] = []
        #: Shepherds that do not notice membership changes (a cut too short for them).
        self.deaf: set[str] = set()
        self.texts: dict[str, str] = {}
        #: How long a reclaim takes (the lease's rebuild wait); None: only ``reclaim_done``.
        self.reclaim_delay: float | None = 0.0
        #: (pool, shepherd host, lost host) of every reclaim asked, cancelled, completed.
        self.reclaims: list[tuple[str, str, str]] = []
        self.cancelled: list[tuple[str, str, str]] = []
        self.reclaimed: list[tuple[float, str, str, str]] = []

    # ------------------------------------------------------------------- scheduling
    def at(self, delay: float, call: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (self.now + delay, next(self.seq), call))

    def run(self, until: float = 1e9, steps: int = 10_000_000) -> None:
        for _ in range(steps):
            if not self.queue or self.queue[0][0] > until:
                break
            self.now, _, call = heapq.heappop(self.queue)
            call()
        self.now = max(self.now, min(until, self.now if not self.queue else until))

    def reachable(self, a: str, b: str) -> bool:
        ends = (self.hosts[a], self.hosts[b])
        return all(h.alive and not h.left for h in ends) and frozenset((a, b)) not in self.cut

    def offers(self, viewer: str | None = None) -> tuple[HostOffer, ...]:
        return tuple(
            HostOffer(h.name, h.core.vcpus, h.core.memory_mib, h.core.memory_mib)
            for h in self.hosts.values()
            if h.alive
            and not h.left
            and (viewer is None or viewer == h.name or self.reachable(viewer, h.name))
        )

    def away(self) -> frozenset[str]:
        """Hosts whose agent left gracefully (their VMs run on)."""
        return frozenset(h.name for h in self.hosts.values() if h.alive and h.left)

    # -------------------------------------------------------------------- shepherds
    def submit(self, text: str, pool: str, shepherd: str, generation: int = 1) -> sc.Shepherd:
        resolved = resolve_text(text)
        self.texts[pool] = text
        record = self.dht.get(pool) or PoolRecord(pool, resolved.digest(), 0, shepherd)
        record = PoolRecord(
            pool,
            record.digest,
            max(record.generation + 1, generation),
            shepherd,
            record.state,
            record.placement,
            record.reason,
        )
        core = sc.Shepherd(record, resolved.root, layout(resolved.root), {}, self.offers(shepherd))
        self.shepherds[(pool, shepherd)] = core
        self.feed_shepherd(pool, shepherd, sc.Begin())
        return core

    def take_over(
        self,
        text: str,
        record: PoolRecord,
        at: str,
        vouched: dict[str, dict[str, str]] | None = None,
        above: int = 0,
    ) -> sc.Shepherd:
        """A successor at ``at`` takes the pool over from ``record`` (a higher generation,
        and above ``above``), told first who is away, then trusting what ``vouched`` hosts
        said they run."""
        resolved = resolve_text(text)
        self.texts[record.pool] = text
        mine = PoolRecord(
            record.pool,
            record.digest,
            max(record.generation, above) + 1,
            at,
            "deploying" if record.state == "running" else record.state,
            record.placement,
            record.reason,
            record.away,  # a predecessor's leave graces go on (PoolService._shepherd)
            record.vouched,
        )
        tree = resolved.root
        core = sc.Shepherd(mine, tree, layout(tree), {}, self.offers(at))
        self.shepherds[(record.pool, at)] = core
        self.feed_shepherd(record.pool, at, sc.MembersChanged(self.offers(at), self.away()))
        self.feed_shepherd(record.pool, at, sc.Begin(vouched or {}))
        return core

    def feed_shepherd(self, pool: str, at: str, event: sc.Event) -> None:
        core = self.shepherds.get((pool, at))
        if core is None or not self.hosts[at].alive or self.hosts[at].left:
            return
        for action in core.handle(event, self.now):
            self.shepherd_action(pool, at, action)

    def shepherd_action(self, pool: str, at: str, action: sc.Action) -> None:
        if isinstance(action, sc.SaveRecord):
            old = self.dht.get(pool)
            if old is None or action.record.generation >= old.generation:
                self.dht[pool] = action.record
        elif isinstance(action, sc.SendOrder):
            self.send_order(pool, at, action.host, action.order)
        elif isinstance(action, sc.SetTimer):
            self.at(
                action.at - self.now,
                lambda: self.feed_shepherd(pool, at, sc.TimerFired(action.name)),
            )
        elif isinstance(action, sc.Warning):
            self.warnings.append(f"{action.path}: {action.message}")
        elif isinstance(action, sc.HandOff):
            self.handoffs.append((pool, action))
        elif isinstance(action, sc.ReclaimHost):
            self.reclaims.append((pool, at, action.host))
            if self.reclaim_delay is not None:
                host = action.host
                self.at(self.reclaim_delay + LATENCY, lambda: self.reclaim_done(pool, at, host))
        elif isinstance(action, sc.CancelReclaim):
            self.cancelled.append((pool, at, action.host))
        elif isinstance(action, sc.Superseded):
            # As PoolService does: stop the core, read the record again, take over above.
            self.step_downs.append((pool, at, action.seen))
            del self.shepherds[(pool, at)]
            seen = action.seen
            self.at(
                LATENCY,
                lambda: self.take_over(self.texts[pool], self.dht[pool], at, above=seen),
            )

    def reclaim_done(self, pool: str, at: str, host: str) -> None:
        """The lease service says ``host``'s lease surely ended (as LeaseService.reclaim)."""
        self.reclaimed.append((self.now, pool, at, host))
        self.feed_shepherd(pool, at, sc.HostReclaimed(host))

    def send_order(self, pool: str, src: str, dst: str, order: Order) -> None:
        def deliver() -> None:
            if not self.reachable(src, dst):
                self.at(
                    LATENCY,
                    lambda: self.feed_shepherd(pool, src, sc.Answered(dst, order, "unreachable")),
                )
                return
            self.host_event(dst, hc.OrderReceived(order), reply_to=src)

        self.at(LATENCY, deliver)

    # ------------------------------------------------------------------------ hosts
    def host_event(self, name: str, event: hc.Event, reply_to: str | None = None) -> None:
        host = self.hosts[name]
        if not host.alive or host.left:
            return
        for action in host.core.handle(event):
            if isinstance(action, hc.Answer):
                assert reply_to is not None
                answer = sc.Answered(name, action.order, action.outcome, action.reason, action.seen)
                pool = action.order.pool
                self.at(LATENCY, lambda a=answer, p=pool, r=reply_to: self.reply(name, r, p, a))
            elif isinstance(action, hc.RunLeaf):
                self.run_leaf(host, action)
            elif isinstance(action, hc.SendReport):
                self.at(LATENCY, lambda a=action: self.report(name, a.shepherd, a.report))
        _, memory = host.core.committed
        host.max_memory = max(host.max_memory, memory)

    def handed_off(self, pool: str) -> list[sc.HandOff]:
        """HandOff actions seen for ``pool`` (the leaving shepherd's last word)."""
        return [h for p, h in self.handoffs if p == pool]

    def reply(self, src: str, dst: str, pool: str, answer: sc.Answered) -> None:
        if self.reachable(src, dst):
            self.feed_shepherd(pool, dst, answer)

    def report(self, src: str, dst: str, report: Report) -> None:
        if self.reachable(src, dst):
            self.feed_shepherd(report.pool, dst, sc.Reported(report))

    def run_leaf(self, host: SimHost, action: hc.RunLeaf) -> None:
        key = (action.pool, action.path)

        def finish() -> None:
            if not host.alive or host.left:
                return  # a leaving agent waits for its operations; one that left is gone
            if action.op == "deploy":
                host.real[key] = False
            elif action.op == "start":
                host.real[key] = True
                host.started[key] += 1
            else:
                host.real.pop(key, None)
            self.host_event(host.name, hc.LeafFinished(action.pool, action.path, action.op))

        self.at(OP_SECONDS[action.op], finish)

    # ------------------------------------------------------------------------ faults
    def kill(self, name: str) -> None:
        host = self.hosts[name]
        host.alive = False
        host.real.clear()
        self.membership_changed()

    def leave(self, name: str) -> None:
        """The host's agent leaves gracefully: it is gone, its VMs keep running."""
        self.hosts[name].left = True
        self.membership_changed()

    def come_back(self, name: str) -> None:
        """The agent that left starts again (what it runs is still there)."""
        self.hosts[name].left = False
        self.membership_changed()

    def partition(self, name: str) -> None:
        for other in self.hosts:
            if other != name:
                self.cut.add(frozenset((name, other)))
        self.membership_changed()

    def heal(self) -> None:
        self.cut.clear()
        self.membership_changed()

    def membership_changed(self) -> None:
        for (pool, at), _core in list(self.shepherds.items()):
            if at in self.deaf:
                continue
            self.feed_shepherd(pool, at, sc.MembersChanged(self.offers(at), self.away()))

    def send_inventory(self, host: str, pool: str, shepherd: str) -> None:
        core = self.hosts[host].core
        if self.reachable(host, shepherd):
            inventory = sc.Inventory(host, core.inventory(pool), core.states(pool))
            self.feed_shepherd(pool, shepherd, inventory)

    def terminate_everywhere(self, pool: str, generation: int | None = None) -> None:
        for name in self.hosts:
            self.host_event(name, hc.PoolTerminated(pool, generation))

    def vm_dies(self, host: str, pool: str, path: str, *, report: bool = True) -> None:
        """The VM stops by itself; ``report=False``: its death report is lost."""
        sim = self.hosts[host]
        sim.real[(pool, path)] = False
        for action in sim.core.handle(hc.LeafDied(pool, path, "crashed")):
            if report and isinstance(action, hc.SendReport):
                self.at(LATENCY, lambda a=action: self.report(host, a.shepherd, a.report))

    # ----------------------------------------------------------------------- checks
    def running(self, pool: str) -> dict[str, list[str]]:
        """VM path -> hosts where it really runs."""
        out: dict[str, list[str]] = {}
        for host in self.hosts.values():
            for (p, path), up in host.real.items():
                if p == pool and up and path.endswith(":vm"):
                    out.setdefault(path, []).append(host.name)
        return out

    def anything_left(self, pool: str) -> list[str]:
        return [
            f"{h.name}:{path}" for h in self.hosts.values() for (p, path) in h.real if p == pool
        ]
