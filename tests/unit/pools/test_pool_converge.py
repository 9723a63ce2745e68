"""Reconciliation that converges: the three ways the mesh used to keep a VM twice (or lose it),
as deterministic runs of the cores, then of the service's driver."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.records import Order, PoolRecord

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text, vm_paths
from .test_pool_service_ends import service
from .test_pool_takeover_tasks import capture_shepherd, fake_dht, ours


def settle(cluster: Cluster, pool: str, shepherd: str) -> None:
    """Every host tells the shepherd what it runs (the periodic inventory), twice: a release
    or a rebuild ordered after the first round shows in the second."""
    for _ in range(2):
        for name in cluster.hosts:
            cluster.send_inventory(name, pool, shepherd)
        cluster.run(until=cluster.now + 5)


def once_each(cluster: Cluster, pool: str, count: int) -> dict[str, str]:
    running = cluster.running(pool)
    assert sorted(running) == vm_paths(count), running
    twice = {path: where for path, where in running.items() if len(where) != 1}
    assert not twice, f"running on more than one host: {twice}"
    return {path: where[0] for path, where in running.items()}


# ------------------------------------------------ 1. an old shepherd that never paused


def test_an_old_shepherd_fenced_on_a_release_steps_down_and_the_mesh_converges() -> None:
    cluster = Cluster(hosts(5))
    text = pool_text(6, restart="always")
    cluster.submit(text, "web", "h0")
    cluster.run(until=5)
    once_each(cluster, "web", 6)
    # A short cut of h0 that h0 itself never noticed (it never paused), while h1 saw it
    # dead and took the pool over, moving h0's units elsewhere.
    cluster.deaf.add("h0")
    cluster.partition("h0")
    cluster.take_over(text, cluster.dht["web"], "h1")
    cluster.run(until=cluster.now + 5)
    # The heal: h0 is the pool's shepherd again in every view, so h1 hands it back; h0's
    # core still runs the old generation and placement.
    del cluster.shepherds[("web", "h1")]
    cluster.deaf.clear()
    cluster.heal()
    settle(cluster, "web", "h0")
    settle(cluster, "web", "h0")
    where = once_each(cluster, "web", 6)
    # h0's release orders were fenced: it stepped down and took over from h1's record.
    assert [(p, at) for p, at, _ in cluster.step_downs] == [("web", "h0")]
    core = cluster.shepherds[("web", "h0")]
    assert core.state == "running"
    assert core.generation > cluster.step_downs[0][2]
    for path, host in where.items():  # status names the real host
        unit = core.leaves[path].unit
        assert core.placement[unit] == host


def test_a_fenced_answer_to_any_order_makes_the_core_inert() -> None:
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(2), "web", "h0")
    cluster.run()
    release = Order("web", core.generation, "h0", core.digest, "x", "terminate", "x")
    actions = core.handle(
        sc.Answered("h1", release, "fenced", "", core.generation + 2), cluster.now
    )
    assert actions == [sc.Superseded(core.generation + 2)]
    assert core.announcement() is None
    for event in (sc.MembersChanged(cluster.offers()), sc.TimerFired("retry:x:deploy")):
        assert core.handle(event, cluster.now) == []


def test_a_fenced_answer_to_an_order_older_than_our_own_bump_is_no_news() -> None:
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(2), "web", "h0")
    cluster.run()
    core.generation += 1  # as a move does
    old = Order("web", core.generation - 1, "h0", core.digest, "x", "terminate", "x")
    assert core.handle(sc.Answered("h1", old, "fenced", "", core.generation), cluster.now) == []
    assert core.superseded is None


# ---------------------------------------------------- 2. VMs lost across leave/rejoin


def test_vms_lost_across_a_leave_and_rejoin_are_rebuilt() -> None:
    cluster = Cluster(hosts(4))
    text = pool_text(8, restart="always")
    core = cluster.submit(text, "web", "h0")
    cluster.run(until=5)
    held = [p for (p, path), up in cluster.hosts["h2"].real.items() if up and p == "web"]
    assert held
    cluster.leave("h2")
    cluster.run(until=cluster.now + 5)
    # The host comes back empty (reboot, or the embedded test host): its agent rebuilds its
    # share from the hypervisor alone, which lists nothing.
    sim = cluster.hosts["h2"]
    sim.real.clear()
    sim.core = hc.HostCore("h2", sim.core.vcpus, sim.core.memory_mib)
    cluster.come_back("h2")
    settle(cluster, "web", "h0")
    once_each(cluster, "web", 8)
    assert core.state == "running"
    assert all(leaf.state == "running" for p, leaf in core.leaves.items() if p.endswith(":vm"))


# ------------------------------------------------------------ the service's driver


def test_the_driver_steps_down_and_takes_over_above_the_fenced_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        pool = ours(svc)
        started = capture_shepherd(svc, monkeypatch)
        core = Fenced()
        svc.shepherding[pool] = ShepherdRun(core)  # type: ignore[arg-type]
        fake_dht(svc).stored[f"pool/{pool}"] = b"\x00" + PoolRecord(pool, "d", 5, "h1").encode()
        order = Order(pool, 4, "h0", "d", "x", "terminate", "x")
        svc._feed(pool, sc.Answered("h1", order, "fenced", "", 9))  # the DHT lags: 5 < 9
        assert pool not in svc.shepherding
        await asyncio.sleep(0.05)
        ((name, generation, base),) = started
        assert (name, generation) == (pool, 10) and base.generation == 5
        await svc.close()

    asyncio.run(go())


class Fenced:
    """A shepherd core that a host has just fenced."""

    paused = False
    ended = False
    generation = 4

    def handle(self, event: sc.Event, now: float) -> list[sc.Action]:
        return [sc.Superseded(9)] if isinstance(event, sc.Answered) else []


def test_a_leftover_seed_is_not_a_running_vm(tmp_path: Path) -> None:
    from sdmesh.hypervisor.nocloud import NoCloudSeedStore
    from sdmesh.storage import OwnerTag, VolumeRequest

    class NoDomains:
        async def list_managed(self, pool: str | None = None) -> list[object]:
            return []

    async def go() -> None:
        seeds = NoCloudSeedStore(tmp_path / "volumes")
        owner = OwnerTag("web", "sfConfig:pool:sd0:vm", 3, "h0")

        async def produce(target: Path) -> None:
            target.write_bytes(b"seed")

        await seeds.store.create(
            VolumeRequest(owner=owner, base_image=""),
            volume_format="raw",
            suffix=".iso",
            produce=produce,
        )
        assert await seeds.list_owned("web")
        svc = service(tmp_path)
        svc.driver = NoDomains()  # type: ignore[assignment]
        svc.caps = SimpleNamespace(cpus=4, memory_mib=4096, driver="test")  # type: ignore[assignment]
        await svc._recover()
        assert svc.host.inventory("web") == {}  # the shepherd rebuilds it
        await svc.close()

    asyncio.run(go())
