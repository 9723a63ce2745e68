"""How pools end: tombstones tied to a generation, the reaper, lost death reports, pruning."""

from __future__ import annotations

from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.records import Order, PoolRecord, Tomb, retry_delay

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text, vm_paths


def order(generation: int, op: str, pool: str = "web") -> Order:
    return Order(pool, generation, "h0", "d", "sfConfig:vm", op, "sfConfig:vm", 1, 256)


def kinds(actions: list[hc.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def answers(actions: list[hc.Action]) -> list[tuple[str, str]]:
    return [(a.outcome, a.reason) for a in actions if isinstance(a, hc.Answer)]


# ------------------------------------------------------------------ tombstones (finding 5)


def test_host_takes_a_resubmission_of_a_terminated_name() -> None:
    """The reviewer's exp_host.py: a host refused the new pool for good."""
    h = hc.HostCore("h1", 4, 4096)
    assert "RunLeaf" in kinds(h.handle(hc.OrderReceived(order(1, "deploy"))))
    h.handle(hc.LeafFinished("web", "sfConfig:vm", "deploy"))
    h.handle(hc.PoolTerminated("web"))  # everything held: up to generation 1
    h.handle(hc.LeafFinished("web", "sfConfig:vm", "terminate"))
    assert answers(h.handle(hc.OrderReceived(order(1, "deploy")))) == [
        ("refused", "the pool was terminated")
    ]
    resubmitted = h.handle(hc.OrderReceived(order(2, "deploy")))
    assert answers(resubmitted) == [("accepted", "")]
    assert "RunLeaf" in kinds(resubmitted)
    assert not h.pools["web"].terminated


def test_an_old_tombstone_heard_late_does_not_end_the_new_pool() -> None:
    """A restarted agent recovers the new pool's VM (generation 3), then hears the old
    pool's tombstone (generation 2) from gossip: nothing of the new pool is torn down."""
    h = hc.HostCore("h1", 4, 4096)
    h.handle(hc.Recovered("web", "sfConfig:vm", "sfConfig:vm", 3, "h0", 1, 256))
    assert h.handle(hc.PoolTerminated("web", 2)) == []
    assert h.inventory("web") == {"sfConfig:vm": 3}
    torn = h.handle(hc.PoolTerminated("web", 3))
    assert [a.op for a in torn if isinstance(a, hc.RunLeaf)] == ["terminate"]


def test_a_tombstone_for_a_pool_never_held_leaves_no_entry() -> None:
    h = hc.HostCore("h1", 4, 4096)
    for i in range(1000):
        h.handle(hc.PoolTerminated(f"x{i}", 1))
    assert len(h.pools) == 0


def test_tomb_covers_its_generation_and_is_superseded_only_by_a_live_resubmission() -> None:
    tomb = Tomb(4, 0.0)
    assert tomb.covers(4) and not tomb.covers(5)
    assert tomb.superseded_by("deploying", 5)
    assert not tomb.superseded_by("running", 4)  # the pool it ended, still gossiped
    assert not tomb.superseded_by("terminating", 9)
    assert Tomb.generation_of({"by": "h0", "gen": 7}, 3) == 7
    assert Tomb.generation_of({"by": "h0"}, 3) == 3  # an older agent's


def test_resubmitted_pool_runs_everywhere_and_survives_the_old_tombstone() -> None:
    c = Cluster(hosts(5))
    text = pool_text(5)
    first = c.submit(text, "web", "h0")
    c.run(until=5)
    assert first.state == "running"
    c.feed_shepherd("web", "h0", sc.TerminateRequested())
    c.run(until=c.now + 5)
    c.terminate_everywhere("web", first.generation)
    c.run(until=c.now + 5)
    assert first.state == "terminated" and not c.anything_left("web")
    second = c.submit(text, "web", "h0")
    assert second.generation > first.generation
    c.run(until=c.now + 5)
    assert second.state == "running", c.warnings
    assert sorted(c.running("web")) == vm_paths(5)
    c.terminate_everywhere("web", first.generation)  # the old rumor, heard late
    c.run(until=c.now + 5)
    assert sorted(c.running("web")) == vm_paths(5)


# ------------------------------------------------------------------ reaper (findings 6, 7)


def test_reaper_needs_quorum_an_answering_dht_and_the_whole_grace() -> None:
    reaper = hc.Reaper(300.0)
    ended = PoolRecord("web", "d", 4, "h0", "failed")
    judge = reaper.judge
    assert judge("web", 0.0, quorate=True, answered=True, record=ended) is None
    assert judge("web", 299.0, quorate=True, answered=True, record=ended) is None
    assert judge("web", 300.0, quorate=True, answered=True, record=ended) == hc.PoolTerminated(
        "web", 4
    )
    # A lookup that failed, or no majority, is no evidence: the grace starts again.
    for quorate, answered in ((True, False), (False, True)):
        assert judge("web", 400.0, quorate=quorate, answered=answered, record=None) is None
        assert judge("web", 401.0, quorate=True, answered=True, record=None) is None
        assert reaper.watched() == ["web"]
    assert judge("web", 701.0, quorate=True, answered=True, record=None) == hc.PoolTerminated(
        "web", None
    )


def test_reaper_keeps_a_live_pool() -> None:
    reaper = hc.Reaper(300.0)
    live = PoolRecord("web", "d", 4, "h0", "running")
    for now in (0.0, 500.0, 5000.0):
        assert reaper.judge("web", now, quorate=True, answered=True, record=live) is None
    assert reaper.watched() == []


def test_reaping_a_terminated_record_spares_a_newer_generation() -> None:
    h = hc.HostCore("h1", 4, 4096)
    h.handle(hc.Recovered("web", "sfConfig:old", "sfConfig:old", 2, "", 1, 256))
    h.handle(hc.Recovered("web", "sfConfig:new", "sfConfig:new", 5, "", 1, 256))
    verdict = hc.Reaper(0.0).judge(
        "web", 0.0, quorate=True, answered=True, record=PoolRecord("web", "d", 4, "h0", "failed")
    )
    assert verdict is not None
    torn = [a.path for a in h.handle(verdict) if isinstance(a, hc.RunLeaf)]
    assert torn == ["sfConfig:old"]


# ------------------------------------------------------------- lost death report (finding 9)


def test_a_dead_vm_whose_report_is_lost_is_noticed_by_the_inventory() -> None:
    c = Cluster(hosts(5))
    core = c.submit(pool_text(5, restart="always"), "web", "h0")
    c.run(until=5)
    assert core.state == "running"
    path = vm_paths(5)[1]
    (where,) = c.running("web")[path]
    before = c.hosts[where].started[("web", path)]
    c.vm_dies(where, "web", path, report=False)
    assert path not in c.running("web")
    assert c.hosts[where].core.states("web")[path] == "deployed"
    c.run(until=c.now + 5)
    assert path not in c.running("web")  # nobody knows yet
    c.send_inventory(where, "web", "h0")
    c.run(until=c.now + 5)
    assert path in c.running("web")
    restarted = sum(h.started[("web", path)] for h in c.hosts.values())
    assert restarted == before + 1


# ----------------------------------------------------------- republish, backoff, pruning


def test_a_live_pool_announces_itself_again_before_its_rumor_expires() -> None:
    c = Cluster(hosts(3))
    core = c.submit(pool_text(2), "web", "h0")
    c.run(until=5)
    assert core.announcement() == sc.Announce("running")
    c.feed_shepherd("web", "h0", sc.TerminateRequested())
    c.run(until=c.now + 5)
    assert core.state == "terminated" and core.announcement() is None


def test_retry_delay_is_bounded() -> None:
    assert [retry_delay(i) for i in range(3)] == [1.0, 2.0, 4.0]
    assert retry_delay(100) == 60.0


def test_host_forgets_a_pool_only_once_it_holds_nothing_of_it() -> None:
    h = hc.HostCore("h1", 4, 4096)
    h.handle(hc.OrderReceived(order(1, "deploy")))
    assert not h.forget("web")
    h.handle(hc.LeafFinished("web", "sfConfig:vm", "deploy"))
    h.handle(hc.PoolTerminated("web", 1))
    h.handle(hc.LeafFinished("web", "sfConfig:vm", "terminate"))
    assert h.forget("web") and "web" not in h.pools


def test_a_resubmission_is_told_apart_from_the_pool_before() -> None:
    """The driver drops the name's cached descriptor on it (the new pool may differ)."""
    h = hc.HostCore("h1", 4, 4096)
    h.handle(hc.OrderReceived(order(1, "deploy")))
    assert not h.resubmitted(order(2, "deploy"))  # a takeover of the same pool
    h.handle(hc.LeafFinished("web", "sfConfig:vm", "deploy"))
    h.handle(hc.PoolTerminated("web", 1))
    assert not h.resubmitted(order(1, "deploy"))
    assert h.resubmitted(order(2, "deploy"))
    h.handle(hc.OrderReceived(order(2, "deploy")))
    assert not h.resubmitted(order(3, "start"))  # once: it follows the new pool now
