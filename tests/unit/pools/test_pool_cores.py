"""The shepherd and host cores together, on a deterministic simulated cluster."""

from __future__ import annotations

import pytest

from sdmesh.language import resolve_text
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.layout import LayoutError, layout
from sdmesh.pools.records import Order

from .cluster import Cluster


def pool_text(
    count: int,
    *,
    memory: int = 256,
    restart: str = "never",
    parallel: bool = True,
    extra: str = "",
) -> str:
    members = "\n".join(
        f"""
        sd{i} extends Compound {{
            sfSyncTerminate true;
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory {memory}; restart "{restart}"; hostname "vm{i}";
                storageBackend LAZY ATTRIB disk; {extra}
            }}
        }}"""
        for i in range(count)
    )
    container = (
        "Parallel { asynchCreateChild true;" if parallel else "Compound { sfSyncTerminate true;"
    )
    return f"""
#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
#include "org/smartfrog/sfcore/workflow/combinators/parallel.sf"
sfConfig extends Compound {{
    pool extends {container}
        {members}
    }}
}}
"""


def hosts(count: int, vcpus: int = 8, memory: int = 4096) -> dict[str, tuple[int, int]]:
    return {f"h{i}": (vcpus, memory) for i in range(count)}


def vm_paths(count: int) -> list[str]:
    return [f"sfConfig:pool:sd{i}:vm" for i in range(count)]


def test_layout_keeps_each_disk_with_its_vm() -> None:
    tree = resolve_text(pool_text(3)).root
    cut = layout(tree)
    assert list(cut.units) == vm_paths(3)
    assert cut.units["sfConfig:pool:sd1:vm"].leaves == (
        "sfConfig:pool:sd1:disk",
        "sfConfig:pool:sd1:vm",
    )
    assert cut.units["sfConfig:pool:sd1:vm"].demand.memory_mib == 256


def test_layout_refuses_two_vms_on_one_disk() -> None:
    text = """
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {
    disk extends Qcow2OverlayBackend { baseImage "/b.qcow2"; }
    a extends VM { storageBackend LAZY ATTRIB disk; }
    b extends VM { storageBackend LAZY ATTRIB disk; }
}"""
    with pytest.raises(LayoutError, match="both use the disk sfConfig:disk"):
        layout(resolve_text(text).root)


def test_restart_policy_is_inherited_from_a_container() -> None:
    text = pool_text(2).replace(
        "sfSyncTerminate true;\n            disk", 'restart "always";\n disk', 1
    )
    cut = layout(resolve_text(text).root)
    assert cut.units["sfConfig:pool:sd0:vm"].restart == "always"
    assert cut.units["sfConfig:pool:sd1:vm"].restart == "never"


def test_pool_spreads_and_runs() -> None:
    cluster = Cluster(hosts(5))
    core = cluster.submit(pool_text(10), "web", "h0")
    cluster.run()
    assert core.state == "running"
    running = cluster.running("web")
    assert sorted(running) == vm_paths(10)
    per_host = {h: sum(1 for where in running.values() if h in where) for h in cluster.hosts}
    assert set(per_host.values()) == {2}  # spread: two each on five equal hosts
    assert cluster.dht["web"].state == "running"
    assert cluster.dht["web"].placement == core.placement


def test_terminate_in_order_leaves_nothing() -> None:
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(4, parallel=False), "web", "h0")
    cluster.run()
    cluster.feed_shepherd("web", "h0", sc.TerminateRequested())
    cluster.run()
    assert core.state == "terminated"
    assert cluster.anything_left("web") == []
    assert all(h.core.committed == (0, 0) for h in cluster.hosts.values())


@pytest.mark.parametrize("restart", ["never", "always"])
def test_shepherd_killed_mid_deploy_converges_and_starts_nothing_twice(restart: str) -> None:
    cluster = Cluster(hosts(5))
    text = pool_text(10, parallel=False, restart=restart)
    cluster.submit(text, "web", "h0")
    cluster.run(until=1.6)  # all deployed, a few VMs started (a sequential Compound)
    assert 0 < len(cluster.running("web")) < 10
    cluster.kill("h0")  # the shepherd's host, and the VMs on it
    successor = cluster.submit(text, "web", "h1")
    assert successor.generation == 2
    cluster.run()
    # The successor's engine replays deploy and start: hosts answer at once for what they
    # run; units whose host died before the takeover are simply placed again.
    assert successor.state == "running"
    running = cluster.running("web")
    assert sorted(running) == vm_paths(10)
    assert all(len(where) == 1 for where in running.values())
    for host in cluster.hosts.values():
        assert all(count == 1 for count in host.started.values()), host.started
    assert cluster.dht["web"].generation >= 2


def test_host_death_restarts_its_vms_elsewhere() -> None:
    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    victims = [u for u, h in core.placement.items() if h == "h2"]
    assert victims
    generation = core.generation
    cluster.kill("h2")
    cluster.run()
    assert core.state == "running"
    assert core.generation > generation
    running = cluster.running("web")
    assert sorted(running) == vm_paths(8)
    assert all("h2" not in where for where in running.values())


def test_host_death_without_restart_fails_the_pool_by_the_lifecycle_rules() -> None:
    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(8), "web", "h0")
    cluster.run()
    cluster.kill("h3")
    cluster.run()
    # Parallel terminates on an abnormal child termination, and the Compound above it too.
    assert core.state == "failed"
    assert "h3 died" in core.reason
    assert cluster.anything_left("web") == []


def test_refusals_lead_to_replacement_and_never_overcommit() -> None:
    # Three pools placed at once from stale offers that all show the same free memory.
    cluster = Cluster(hosts(3, memory=1024))
    cores = [
        cluster.submit(pool_text(4, memory=256), name, shepherd)
        for name, shepherd in (("a", "h0"), ("b", "h1"), ("c", "h2"))
    ]
    cluster.run()
    for host in cluster.hosts.values():
        assert host.max_memory <= 1024, host.name
    running = sum(len(cluster.running(p)) for p in "abc")
    assert running <= 12  # 3 KiB of hosts hold twelve 256 MiB VMs
    assert any("refused" in w for w in cluster.warnings)
    states = sorted(core.state for core in cores)
    assert states.count("running") >= 2


def test_fenced_orders_from_an_old_shepherd_change_nothing() -> None:
    cluster = Cluster(hosts(2))
    cluster.submit(pool_text(2), "web", "h0")
    cluster.run()
    host = cluster.hosts["h1"].core
    # h1 has seen generation 1 from h0; an order at generation 0 is refused.
    stale = Order("web", 0, "h9", "d", "sfConfig:pool:sd0:vm", "terminate", "sfConfig:pool:sd0:vm")
    (answer,) = host.handle(hc.OrderReceived(stale))
    assert isinstance(answer, hc.Answer) and answer.outcome == "fenced"
    # The same generation from another shepherd is refused too (split brain).
    rival = Order("web", 1, "h9", "d", "sfConfig:pool:sd0:vm", "terminate", "sfConfig:pool:sd0:vm")
    (answer,) = host.handle(hc.OrderReceived(rival))
    assert answer.outcome == "fenced"
    assert len(cluster.running("web")) == 2


def test_partitioned_host_heals_and_its_stale_copies_go() -> None:
    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(8, restart="always"), "web", "h0")
    cluster.run()
    cluster.partition("h3")  # h3 keeps running its VMs, the shepherd moves them
    cluster.run()
    running = cluster.running("web")
    assert sorted(running) == vm_paths(8)
    cluster.heal()
    cluster.send_inventory("h3", "web", "h0")  # h3 re-announces what it runs
    cluster.run()
    running = cluster.running("web")
    assert all(len(where) == 1 for where in running.values()), running
    assert sorted(running) == vm_paths(8)
    assert core.state == "running"


def test_termination_record_tears_down_without_the_shepherd() -> None:
    cluster = Cluster(hosts(3))
    cluster.submit(pool_text(6), "web", "h0")
    cluster.run()
    cluster.kill("h0")
    cluster.terminate_everywhere("web")
    cluster.run()
    assert cluster.anything_left("web") == []
    # and a late deploy order for it is refused (the record ends what was ordered up to
    # its generation; a resubmission of the name starts above it)
    gen = cluster.dht["web"].generation
    late = Order("web", gen, "h0", "d", "sfConfig:pool:sd0:disk", "deploy", "sfConfig:pool:sd0:vm")
    (answer,) = cluster.hosts["h1"].core.handle(hc.OrderReceived(late))
    assert answer.outcome == "refused"


def test_host_answers_again_for_work_already_done() -> None:
    core = hc.HostCore("h", 4, 1024)
    order = Order("p", 1, "s", "d", "x:disk", "deploy", "x:vm", 1, 128)
    actions = core.handle(hc.OrderReceived(order))
    assert [type(a) for a in actions] == [hc.Answer, hc.RunLeaf]
    core.handle(hc.LeafFinished("p", "x:disk", "deploy"))
    again = core.handle(hc.OrderReceived(order))
    assert [type(a) for a in again] == [hc.Answer, hc.SendReport]
    assert core.committed == (1, 128)


def test_host_admission_counts_promises_not_just_running_vms() -> None:
    core = hc.HostCore("h", 4, 512)
    first = Order("p", 1, "s", "d", "a:vm", "deploy", "a:vm", 1, 384)
    second = Order("q", 1, "t", "d", "b:vm", "deploy", "b:vm", 1, 256)
    core.handle(hc.OrderReceived(first))
    (answer,) = core.handle(hc.OrderReceived(second))
    assert answer.outcome == "refused"
    assert "128 MiB left" in answer.reason


@pytest.mark.parametrize("hosts_count,vms", [(300, 1000)])
def test_a_thousand_vms_over_hundreds_of_hosts(hosts_count: int, vms: int) -> None:
    cluster = Cluster(hosts(hosts_count, memory=2048))
    core = cluster.submit(pool_text(vms, memory=128, restart="always"), "big", "h0")
    cluster.run()
    assert core.state == "running"
    assert len(cluster.running("big")) == vms
    for victim in ("h5", "h6", "h7"):
        cluster.kill(victim)
    cluster.run()
    assert core.state == "running"
    running = cluster.running("big")
    assert len(running) == vms and all(len(w) == 1 for w in running.values())
    cluster.feed_shepherd("big", "h0", sc.TerminateRequested())
    cluster.run()
    assert cluster.anything_left("big") == []


def test_refusals_answered_after_another_unit_moved_still_count() -> None:
    # Moving one refused unit bumps the generation; the refusals of the other units' orders,
    # sent before the bump, must still lead to re-placement or failure, never to a leaf
    # waiting forever (seen on real agents: a pool stuck in "deploying").
    sizes = {"h0": (2, 2048), "h1": (3, 3072), "h2": (4, 4096), "h3": (5, 5120), "h4": (6, 6144)}
    cluster = Cluster(sizes)
    cores = [
        cluster.submit(pool_text(5, memory=1536), name, shepherd)
        for name, shepherd in (("a", "h3"), ("b", "h2"), ("c", "h1"))
    ]
    cluster.run()
    for core in cores:
        assert core.state in ("running", "failed"), (core.pool, core.state)
        assert all(leaf.engine_op is None for leaf in core.leaves.values()), core.pool
        if core.state == "failed":
            assert cluster.anything_left(core.pool) == []
    for host in cluster.hosts.values():
        assert host.max_memory <= host.core.memory_mib, host.name


def test_pool_is_running_only_once_its_vms_are() -> None:
    # A Parallel with asynchCreateChild counts as started before its children are up; the
    # pool (and `submit --wait`) must wait for them.
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(4, parallel=True), "web", "h0")
    states: list[tuple[str, int]] = []
    feed = cluster.feed_shepherd

    def watching(pool: str, at: str, event: sc.Event) -> None:
        feed(pool, at, event)
        if not states or states[-1][0] != core.state:
            states.append((core.state, len(cluster.running("web"))))

    cluster.feed_shepherd = watching  # type: ignore[method-assign]
    cluster.run()
    assert core.state == "running"
    assert ("running", 4) in states and all(n == 4 for s, n in states if s == "running")


def test_a_vm_restarted_in_place_is_not_refused_by_its_own_ghost_and_else_moves() -> None:
    """A VM that ended on a host (fenced when its agent came back, say) is placed there
    again although the host's gossiped free memory still counts it; and when it truly does
    not fit there any more, it moves to a host where it fits instead of failing the pool
    (nemesis leave+rejoin: "cannot be placed again: h1 has 0 MiB free")."""
    from dataclasses import replace

    cluster = Cluster(hosts(4))
    core = cluster.submit(pool_text(4, restart="always"), "web", "h0")
    cluster.run()
    unit, home = next((u, h) for u, h in core.placement.items() if u.endswith(":vm"))
    core.offers[home] = replace(core.offers[home], memory_free_mib=0)  # still counts it
    assert core._move(unit, reason="fenced: lease lost", keep=home)
    assert core.placement[unit] == home
    core.offers[home] = replace(core.offers[home], memory_free_mib=-4096)  # truly full
    assert core._move(unit, reason="fenced: lease lost", keep=home)
    assert core.placement[unit] != home
