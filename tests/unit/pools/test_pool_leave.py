"""Graceful leaves on the deterministic cluster: the shepherd hands its pools over, a host that
left keeps its VMs, and who may shepherd at all (successors, the majority rule)."""

from __future__ import annotations

import pytest

from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.ownership import by_distance, has_quorum, shepherd, successors
from sdmesh.pools.records import Order

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text, vm_paths


def hand_over(cluster: Cluster, text: str, pool: str, leaver: str, successor: str) -> sc.Shepherd:
    """What PoolService.leave does: the leaving host stops taking new units and finishes
    what it is doing, the leaving core hands off, the successor takes over from the handed
    record trusting what the leaver holds, then the leave shows."""
    cluster.host_event(leaver, hc.Leaving())
    while cluster.hosts[leaver].core.busy():
        cluster.run(until=cluster.now + 0.01)
    cluster.feed_shepherd(pool, leaver, sc.HandOver(successor))
    (handoff,) = cluster.handed_off(pool)
    assert handoff.successor == successor
    held = cluster.hosts[leaver].core.holdings(pool)
    cluster.hosts[leaver].left = True  # away from here on, for everyone
    successor_core = cluster.take_over(text, handoff.record, successor, {leaver: held})
    cluster.membership_changed()
    return successor_core


def test_shepherd_leaving_mid_deploy_hands_over_and_nothing_starts_twice() -> None:
    cluster = Cluster(hosts(5))
    text = pool_text(10, parallel=False)  # restart "never": nothing may be lost on the way
    old = cluster.submit(text, "web", "h0")
    cluster.run(until=1.6)  # deployed, a few VMs started (a sequential Compound)
    assert 0 < len(cluster.running("web")) < 10
    on_leaver = {p for p, where in cluster.running("web").items() if "h0" in where}
    assert on_leaver  # the leaving shepherd's own host runs some of them
    successor = successors("web", cluster.hosts, "h0")[0]
    new = hand_over(cluster, text, "web", "h0", successor)
    assert new.generation == old.generation + 1
    cluster.run(until=cluster.now + 60)  # well within the grace: h0's VMs are still in
    assert new.state == "running"
    running = cluster.running("web")
    assert sorted(running) == vm_paths(10)
    assert all(len(where) == 1 for where in running.values()), running
    # The leaver's VMs kept running where they were: not rebuilt elsewhere.
    assert {p for p, where in running.items() if "h0" in where} == on_leaver
    for host in cluster.hosts.values():
        assert all(count == 1 for count in host.started.values()), (host.name, host.started)
    assert cluster.dht["web"].generation == new.generation
    assert cluster.dht["web"].shepherd == successor


def test_the_handed_off_core_never_acts_again() -> None:
    cluster = Cluster(hosts(3))
    old = cluster.submit(pool_text(3), "web", "h0")
    cluster.run()
    actions = old.handle(sc.HandOver("h1"), cluster.now)
    assert [type(a) for a in actions] == [sc.SaveRecord, sc.HandOff]
    saved, handoff = actions
    assert isinstance(saved, sc.SaveRecord) and isinstance(handoff, sc.HandOff)
    assert handoff.record == saved.record == old.record()
    # A fenced answer from a host that has seen the successor's generation: an active core
    # would re-assert itself with a higher generation (split brain); a handed-off one is quiet.
    order = Order("web", old.generation, "h0", old.digest, "sfConfig:pool:sd0:vm", "start", "u")
    events: list[sc.Event] = [
        sc.Answered("h1", order, "fenced", "", old.generation + 1),
        sc.MembersChanged(cluster.offers()),
        sc.TerminateRequested(),
        sc.TimerFired("away:h2"),
    ]
    for event in events:
        assert old.handle(event, cluster.now) == []
    assert old.generation == handoff.record.generation


def test_terminating_pool_is_handed_over_and_finishes_terminating() -> None:
    cluster = Cluster(hosts(4))
    text = pool_text(6, parallel=False)
    cluster.submit(text, "web", "h0")
    cluster.run()
    cluster.feed_shepherd("web", "h0", sc.TerminateRequested())
    cluster.run(until=cluster.now + 0.05)  # part way through the ordered termination
    new = hand_over(cluster, text, "web", "h0", "h1")
    cluster.run(until=cluster.now + 60)
    assert new.state == "terminated"
    # What ran on the leaver is its own to clear (the termination record reaches it).
    left = [where for where in cluster.anything_left("web") if not where.startswith("h0:")]
    assert left == []


def test_a_host_that_left_keeps_its_vms_in_the_pool_and_nothing_moves() -> None:
    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(8), "web", "h0")  # restart "never": a loss would fail
    cluster.run()
    generation, placement = core.generation, dict(core.placement)
    cluster.leave("h2")
    cluster.run(until=cluster.now + 60)
    assert core.state == "running"
    assert core.generation == generation and core.placement == placement
    assert sorted(cluster.running("web")) == vm_paths(8)
    cluster.come_back("h2")  # an agent restart: back before the grace ends
    cluster.send_inventory("h2", "web", "h0")
    cluster.run()
    assert core.state == "running" and core.generation == generation
    assert "h2" not in core.away


def test_a_host_that_left_and_never_came_back_counts_as_lost_after_the_grace() -> None:
    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    victims = sorted(u for u, h in core.placement.items() if h == "h3")
    assert victims
    cluster.leave("h3")
    cluster.run(until=cluster.now + sc.AWAY_GRACE - 1)
    assert all(core.placement[u] == "h3" for u in victims)
    cluster.run(until=cluster.now + 2)
    cluster.run()
    assert all(core.placement[u] != "h3" for u in victims)
    assert core.state == "running"
    # The copies on h3 ran on meanwhile; when its agent returns they are released.
    cluster.come_back("h3")
    cluster.send_inventory("h3", "web", "h0")
    cluster.run()
    running = cluster.running("web")
    assert sorted(running) == vm_paths(8)
    assert all(len(where) == 1 and "h3" not in where for where in running.values()), running


def test_a_unit_with_an_operation_under_way_on_a_host_that_leaves_moves_at_once() -> None:
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(3, restart="always"), "web", "h0")
    cluster.run(until=0.03)  # the disks are being created
    busy = sorted(u for u, h in core.placement.items() if h == "h2")
    assert busy
    cluster.hosts["h2"].left = True  # gone before it finished: it will never report
    cluster.membership_changed()
    assert all(core.placement[u] != "h2" for u in busy)
    cluster.run()
    assert core.state == "running"


def test_a_leaving_host_admits_no_new_unit_but_answers_for_its_own() -> None:
    core = hc.HostCore("h", 8, 4096)
    mine = Order("p", 1, "s", "d", "a:disk", "deploy", "a:vm", 1, 256)
    core.handle(hc.OrderReceived(mine))
    core.handle(hc.LeafFinished("p", "a:disk", "deploy"))
    assert core.holdings("p") == {"a:disk": "deployed"}
    core.handle(hc.Leaving())
    (refusal,) = core.handle(hc.OrderReceived(Order("q", 1, "t", "d", "b:vm", "deploy", "b:vm")))
    assert isinstance(refusal, hc.Answer)
    assert refusal.outcome == "refused" and "leaving" in refusal.reason
    vm = Order("p", 1, "s", "d", "a:vm", "deploy", "a:vm", 1, 256)  # same unit: admitted
    answer, run = core.handle(hc.OrderReceived(vm))
    assert isinstance(answer, hc.Answer) and answer.outcome == "accepted"
    assert isinstance(run, hc.RunLeaf)
    assert core.busy() and core.holdings("p") == {"a:disk": "deployed"}  # a:vm is under way
    core.handle(hc.LeafFinished("p", "a:vm", "deploy"))
    assert not core.busy()
    assert core.holdings("p") == {"a:disk": "deployed", "a:vm": "deployed"}


def test_the_successor_is_who_shepherds_once_the_leaver_is_gone() -> None:
    members = [f"h{i}" for i in range(7)]
    for pool in ("web", "db", "demo", "x"):
        leaver = shepherd(pool, members)
        assert leaver is not None
        rest = [m for m in members if m != leaver]
        order = successors(pool, members, leaver)
        assert order[0] == shepherd(pool, rest)
        assert order == by_distance(pool, rest)


@pytest.mark.parametrize(
    ("live", "counted", "expected"),
    [(1, 1, True), (3, 5, True), (2, 5, False), (2, 4, False), (1, 2, False), (0, 0, False)],
)
def test_only_a_strict_majority_may_shepherd(live: int, counted: int, expected: bool) -> None:
    assert has_quorum(live, counted) is expected
