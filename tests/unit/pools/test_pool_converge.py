"""Reconciliation that converges: the three ways the mesh used to keep a VM twice (or lose it),
as deterministic runs of the cores, then of the service's driver."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.membership import State
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.losses import LossConfirmer
from sdmesh.pools.records import Order, PoolRecord

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text, vm_paths
from .test_pool_flaps import service as flap_service
from .test_pool_flaps import shepherded
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
    held = [path for (p, path), up in cluster.hosts["h2"].real.items() if up and p == "web"]
    assert held
    cluster.leave("h2")
    cluster.run(until=cluster.now + 5)
    # The host comes back empty (reboot, or the embedded test host): its agent rebuilds its
    # share from the hypervisor alone, which lists nothing.
    sim = cluster.hosts["h2"]
    sim.real.clear()
    sim.core = hc.HostCore("h2", sim.core.vcpus, sim.core.memory_mib)
    cluster.come_back("h2")
    for name in cluster.hosts:
        cluster.send_inventory(name, "web", "h0")
    lost = {item["path"]: item["state"] for item in core.components() if item["path"] in held}
    assert lost and "running" not in lost.values(), lost  # status: being rebuilt
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


# ------------------------------------------- 3. stale "dead" verdicts after a heal


def test_a_loss_refuted_within_its_window_is_never_acted_on() -> None:
    losses = LossConfirmer(window=2.0)
    everyone = {"h0", "h1", "h2", "h3", "h4"}
    assert losses.observe(everyone, True, 0.0) == everyone
    # gossip carries a cut-off host's stale verdict: h3 drops out for 300 ms
    assert losses.observe(everyone - {"h3"}, True, 10.0) == everyone
    assert losses.recheck_at() == 12.0
    assert losses.observe(everyone, True, 10.3) == everyone  # refuted
    assert losses.recheck_at() is None
    # a real death: counted until the window has run out
    assert losses.observe(everyone - {"h3"}, True, 20.0) == everyone
    assert losses.observe(everyone - {"h3"}, True, 21.9) == everyone
    assert losses.observe(everyone - {"h3"}, True, 22.0) == everyone - {"h3"}


def test_losses_seen_without_a_majority_are_checked_again_after_it_is_back() -> None:
    losses = LossConfirmer(window=2.0)
    everyone = {"h0", "h1", "h2", "h3", "h4"}
    losses.observe(everyone, True, 0.0)
    # h0 is cut off: it sees everyone die, for a long time, without a majority
    for now in (1.0, 5.0, 60.0):
        assert losses.observe({"h0"}, False, now) == everyone
        assert losses.recheck_at() is None
    # the heal: the majority is back while h4's stale "dead" is not refuted yet
    assert losses.observe(everyone - {"h4"}, True, 61.0) == everyone
    assert losses.recheck_at() == 63.0
    assert losses.observe(everyone, True, 61.4) == everyone  # refuted in time
    assert losses.recheck_at() is None


def test_the_driver_moves_nothing_on_a_verdict_refuted_in_time(tmp_path: Path) -> None:
    async def go() -> None:
        names = [f"h{i}" for i in range(5)]
        svc, membership = flap_service(names, "h0", tmp_path)
        svc._losses = LossConfirmer(window=0.2)
        _pool, core = shepherded(svc, names)
        svc._apply_view()  # everyone alive
        victim = next(n for n in names if n != "h0")
        membership.set(victim, State.DEAD)
        svc._apply_view()
        membership.set(victim, State.ALIVE)  # refuted 100 ms later
        await asyncio.sleep(0.1)
        svc._apply_view()
        await asyncio.sleep(0.3)
        views = [e for e in core.events if isinstance(e, sc.MembersChanged)]
        assert views and all(victim in {o.name for o in e.offers} for e in views)
        # a death that stands: the shepherd hears of it once the window has run out
        membership.set(victim, State.DEAD)
        svc._apply_view()
        assert victim in {o.name for o in svc.offers()}
        await asyncio.sleep(0.4)  # the recheck, without another view event
        assert victim not in {o.name for o in svc.offers()}
        last = [e for e in core.events if isinstance(e, sc.MembersChanged)][-1]
        assert victim not in {o.name for o in last.offers}
        await svc.close()

    asyncio.run(go())


def test_a_relative_state_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def go() -> None:
        svc = service(Path("state"))
        assert svc.state_dir == tmp_path / "state" and svc.state_dir.is_absolute()
        await svc.close()

    asyncio.run(go())


def test_a_stopped_domain_recovers_as_deployed_and_a_running_one_as_running(
    tmp_path: Path,
) -> None:
    from sdmesh.hypervisor.driver import ManagedDomain
    from sdmesh.hypervisor.events import DomainState
    from sdmesh.hypervisor.spec import SdmeshMetadata

    def domain(path: str, state: DomainState) -> ManagedDomain:
        meta = SdmeshMetadata("web", path, 3, "sha256:" + "d" * 64, "h0")
        return ManagedDomain(path.replace(":", "-"), "u", state, meta, 256, 1)

    class Libvirt:
        async def list_managed(self, pool: str | None = None) -> list[ManagedDomain]:
            return [domain("a:vm", DomainState.SHUTOFF), domain("b:vm", DomainState.RUNNING)]

    async def go() -> None:
        svc = service(tmp_path)
        svc.driver = Libvirt()  # type: ignore[assignment]
        svc.caps = SimpleNamespace(cpus=4, memory_mib=4096, driver="test")  # type: ignore[assignment]
        await svc._recover()
        assert svc.host.states("web") == {"a:vm": "deployed", "b:vm": "running"}
        await svc.close()

    asyncio.run(go())
