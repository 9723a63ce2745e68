"""A lost host's units are rebuilt only once its reclaim completes (its lease surely ended,
so it stopped their VMs): ReclaimHost, HostReclaimed, CancelReclaim and ``isolation "keep"``,
on the deterministic cluster (tests/unit/pools/cluster.py)."""

from __future__ import annotations

import random

import pytest

from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text, vm_paths


def _running_once(cluster: Cluster, pool: str) -> None:
    running = cluster.running(pool)
    assert all(len(where) == 1 for where in running.values()), running


def _fence(cluster: Cluster, host: str) -> None:
    """What the cut host's lease does before the reclaim can complete: stop its VMs."""
    sim = cluster.hosts[host]
    for key in list(sim.real):
        sim.real[key] = False


def test_a_dead_hosts_units_wait_for_the_reclaim() -> None:
    cluster = Cluster(hosts(4))
    cluster.reclaim_delay = None  # completed only by hand below
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    victims = sorted(u for u, h in core.placement.items() if h == "h2")
    assert victims
    generation = core.generation
    cluster.kill("h2")
    cluster.run(until=cluster.now + 30)
    assert cluster.reclaims == [("web", "h0", "h2")]
    assert core.reclaiming == {"h2"}
    assert all(core.placement[u] == "h2" for u in victims)  # nothing moved yet
    assert core.generation == generation
    assert sorted(cluster.running("web")) == sorted(set(vm_paths(8)) - set(victims))
    cluster.reclaim_done("web", "h0", "h2")
    cluster.run()
    assert core.state == "running"
    assert sorted(cluster.running("web")) == vm_paths(8)
    assert all(core.placement[u] != "h2" for u in victims)
    assert core.reclaiming == set() and core.reclaimed == {"h2"}


def test_a_cut_host_is_rebuilt_only_after_it_fenced_and_never_twice() -> None:
    cluster = Cluster(hosts(4))
    cluster.reclaim_delay = None
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    cluster.partition("h3")
    cluster.run(until=cluster.now + 10)
    _running_once(cluster, "web")  # the cut host still runs its VMs, nobody else does
    assert ("web", "h0", "h3") in cluster.reclaims
    _fence(cluster, "h3")  # its lease ran out: it stopped them...
    cluster.reclaim_done("web", "h0", "h3")  # ...before a majority says the lease ended
    cluster.run(until=cluster.now + 10)
    _running_once(cluster, "web")
    assert sorted(cluster.running("web")) == vm_paths(8)
    cluster.heal()
    cluster.send_inventory("h3", "web", "h0")
    cluster.run()
    _running_once(cluster, "web")
    assert core.state == "running"


def test_a_host_back_before_its_reclaim_cancels_it_and_keeps_its_vms() -> None:
    cluster = Cluster(hosts(4))
    cluster.reclaim_delay = None
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    placement = dict(core.placement)
    generation = core.generation
    cluster.partition("h1")
    cluster.run(until=cluster.now + 2)
    cluster.heal()
    cluster.run(until=cluster.now + 2)
    assert cluster.cancelled == [("web", "h0", "h1")]
    assert core.reclaiming == set()
    cluster.reclaim_done("web", "h0", "h1")  # a late completion changes nothing
    cluster.run()
    assert core.placement == placement
    assert core.generation == generation
    assert sorted(cluster.running("web")) == vm_paths(8)
    _running_once(cluster, "web")


def test_isolation_keep_units_stay_with_their_lost_host() -> None:
    cluster = Cluster(hosts(3))
    text = pool_text(6, restart="always", extra='isolation "keep";')
    core = cluster.submit(text, "web", "h0")
    cluster.run()
    kept = sorted(u for u, h in core.placement.items() if h == "h2")
    assert kept
    cluster.partition("h2")  # a keep VM's host runs it on without a lease
    cluster.run()
    assert ("web", "h0", "h2") in cluster.reclaims
    assert all(core.placement[u] == "h2" for u in kept)  # never rebuilt elsewhere
    _running_once(cluster, "web")
    assert sorted(cluster.running("web")) == vm_paths(6)
    cluster.heal()
    cluster.send_inventory("h2", "web", "h0")
    cluster.run()
    _running_once(cluster, "web")
    assert core.state == "running"


def test_the_away_grace_ends_through_a_reclaim() -> None:
    cluster = Cluster(hosts(4))
    cluster.reclaim_delay = None
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    cluster.leave("h2")
    cluster.run(until=cluster.now + sc.AWAY_GRACE + 1)
    assert "h2" not in core.away
    assert cluster.reclaims == [("web", "h0", "h2")]
    assert any(h == "h2" for h in core.placement.values())  # its leave's lease may run on
    cluster.hosts["h2"].real.clear()  # the guard stopped them at the leave lease's end
    cluster.reclaim_done("web", "h0", "h2")
    cluster.run()
    assert sorted(cluster.running("web")) == vm_paths(8)
    assert all(h != "h2" for h in core.placement.values())


def test_a_takeover_waits_for_the_reclaim_of_a_lost_host() -> None:
    cluster = Cluster(hosts(5))
    cluster.reclaim_delay = None
    text = pool_text(10, restart="always")
    core = cluster.submit(text, "web", "h0")
    cluster.run()
    on_h4 = sorted(u for u, h in core.placement.items() if h == "h4")
    assert on_h4
    cluster.partition("h0")  # the shepherd's host is cut
    cluster.partition("h4")  # and so is a host with VMs, at once (cut is pairwise)
    cluster.hosts["h0"].alive = False  # the old shepherd is gone
    record = cluster.dht["web"]
    successor = cluster.take_over(text, record, "h1")
    cluster.run(until=cluster.now + 10)
    assert ("web", "h1", "h4") in cluster.reclaims
    assert all(successor.placement[u] == "h4" for u in on_h4)
    _running_once(cluster, "web")
    _fence(cluster, "h4")
    cluster.reclaim_done("web", "h1", "h4")
    cluster.hosts["h0"].real.clear()  # dead: its guard stopped its VMs
    cluster.reclaim_done("web", "h1", "h0")  # asked for the old shepherd's host too
    cluster.run()
    assert successor.state == "running"
    assert all(successor.placement[u] not in ("h0", "h4") for u in on_h4)
    _running_once(cluster, "web")
    assert sorted(cluster.running("web")) == vm_paths(10)


def test_reclaim_actions_are_plain_events_for_the_driver() -> None:
    cluster = Cluster(hosts(3))
    cluster.reclaim_delay = None
    core = cluster.submit(pool_text(3, restart="always"), "web", "h0")
    cluster.run()
    lost = next(h for h in core.placement.values() if h != "h0")
    offers = tuple(o for o in cluster.offers("h0") if o.name != lost)
    actions = core.handle(sc.MembersChanged(offers), cluster.now)
    assert sc.ReclaimHost(lost) in actions
    assert not any(isinstance(a, sc.SendOrder) for a in actions)
    again = core.handle(sc.MembersChanged(offers), cluster.now)
    assert sc.ReclaimHost(lost) not in again  # asked once
    moved = core.handle(sc.HostReclaimed(lost), cluster.now)
    assert any(isinstance(a, sc.SendOrder) and a.host != lost for a in moved)


REBUILD_WAIT = 6.12  # sdmesh.ha.timing: the voters' wait after their last grant
FENCE_AFTER = 5.0  # the cut host's isolation response (isolation timeout less allowance)


class LeasedCluster(Cluster):
    """The cluster with a model of leases: a cut host stops its VMs FENCE_AFTER seconds after
    the cut, and a reclaim completes no sooner than REBUILD_WAIT seconds after it."""

    def __init__(self, hosts_: dict[str, tuple[int, int]]) -> None:
        super().__init__(hosts_)
        self.reclaim_delay = None
        self.cut_at: dict[str, float] = {}

    def shepherd_action(self, pool: str, at: str, action: sc.Action) -> None:
        super().shepherd_action(pool, at, action)
        if isinstance(action, sc.ReclaimHost):
            host = action.host
            ends = self.cut_at.get(host, self.now) + REBUILD_WAIT
            self.at(max(0.0, ends - self.now), lambda: self.reclaim_done(pool, at, host))

    def cut_host(self, name: str) -> None:
        self.cut_at[name] = self.now
        self.partition(name)
        self.at(FENCE_AFTER, lambda: self.fence_host(name))

    def fence_host(self, name: str) -> None:
        sim = self.hosts[name]
        if name not in self.cut_at:
            return  # healed in time: the lease was renewed
        for (pool, path), up in list(sim.real.items()):
            if up:
                sim.real[(pool, path)] = False
                sim.core.handle(hc.LeafDied(pool, path, "fenced: lease lost"))

    def heal_host(self, name: str) -> None:
        self.cut_at.pop(name, None)
        self.heal()

    def run_checked(self, pool: str, until: float) -> None:
        """Run event by event, checking after each that no VM runs on two hosts."""
        while self.queue and self.queue[0][0] <= until:
            self.run(until=until, steps=1)
            running = self.running(pool)
            twice = {path: where for path, where in running.items() if len(where) > 1}
            assert not twice, f"t={self.now:.3f}: {twice}"
        self.now = max(self.now, until)


@pytest.mark.parametrize("seed", range(4))
def test_cuts_long_and_short_never_run_a_vm_twice(seed: int) -> None:
    rng = random.Random(seed)
    cluster = LeasedCluster(hosts(5))
    core = cluster.submit(pool_text(10, restart="always"), "web", "h0")
    cluster.run_checked("web", 5.0)
    assert core.state == "running"
    for _ in range(4):
        victim = rng.choice(["h1", "h2", "h3", "h4"])
        cut_for = rng.choice([1.0, 3.0, 8.0, 15.0])  # short ones heal before any fence
        cluster.cut_host(victim)
        cluster.run_checked("web", cluster.now + cut_for)
        cluster.heal_host(victim)
        for host in cluster.hosts:
            cluster.send_inventory(host, "web", "h0")
        cluster.run_checked("web", cluster.now + 20.0)
        for host in cluster.hosts:
            cluster.send_inventory(host, "web", "h0")
        cluster.run_checked("web", cluster.now + 20.0)
        assert sorted(cluster.running("web")) == vm_paths(10), (victim, cut_for)
        assert core.state == "running"
