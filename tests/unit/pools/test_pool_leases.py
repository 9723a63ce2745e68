"""The pool service's side of leases (sdmesh/agent/pools/fencing.py, shepherding.py): no new
restartable unit without a lease, the isolation response, and a shepherd that feeds the
core ``HostReclaimed`` only once the lease service says the lost host's lease ended."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sdmesh.agent.pools import fencing
from sdmesh.agent.pools.fencing import JUST_BACK, NO_GUARD, NO_LEASE
from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.language import resolve_text
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.records import Order
from sdmesh.pools.submission import build_spec

from .test_pool_cores import pool_text
from .test_pool_hiccups import ordered, parts
from .test_pool_service_ends import service

VM = "sfConfig:pool:sd0:vm"


class FakeLease:
    """LeaseService's calls the pool service makes, driven by the test."""

    def __init__(self) -> None:
        self.valid = True
        self.just_back = False  # a lease held again after a cut: old orders may arrive
        self.lapses = 0
        self.rearmed = 0
        self.guard_armed = True
        self.cancelled: list[str] = []
        self._reclaims: dict[str, asyncio.Future[None]] = {}

    def may_run(self) -> bool:
        return self.valid

    def may_start(self) -> bool:
        return self.valid and not self.just_back

    def rearm(self) -> bool:
        self.rearmed += 1
        return self.guard_armed

    async def reclaim(self, holder: str) -> None:
        future = self._reclaims.get(holder)
        if future is None or future.done():
            future = self._reclaims[holder] = asyncio.get_running_loop().create_future()
        await asyncio.shield(future)

    def cancel_reclaim(self, holder: str) -> None:
        self.cancelled.append(holder)
        future = self._reclaims.pop(holder, None)
        if future is not None and not future.done():
            future.cancel()

    def ended(self, holder: str) -> None:
        self._reclaims.pop(holder).set_result(None)


class FakeDriver:
    def __init__(self, failures: int = 0) -> None:
        self.destroyed: list[str] = []
        self.failures = failures
        self.tries = 0

    async def destroy(self, name: str) -> bool:
        self.tries += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("libvirt: cannot destroy")
        self.destroyed.append(name)
        return True


class StubCore:
    """Records what the driver feeds a shepherd core."""

    paused = False

    def __init__(self) -> None:
        self.events: list[object] = []

    def handle(self, event: object, now: float) -> list[object]:
        self.events.append(event)
        return []


def deploy(unit: str, generation: int = 3) -> Order:
    return Order("web", generation, "h1", "d" * 64, unit, "deploy", unit, 1, 256)


def leased(tmp_path: Path) -> tuple[Any, FakeLease]:
    svc = service(tmp_path)
    lease = FakeLease()
    svc.lease = lease  # type: ignore[assignment]
    return svc, lease


def test_no_new_restartable_unit_without_a_lease(tmp_path: Path) -> None:
    async def go() -> None:
        svc, lease = leased(tmp_path)
        lease.valid = False
        # Nothing known of the pool yet: it counts as restartable (deny by default).
        assert svc.take_orders([deploy(VM)]) == [["refused", NO_LEASE, 3]]
        lease.valid = True
        lease.just_back = True  # held again after a cut: orders from before may still arrive
        # Its descriptor not loaded yet: admitted (a deploy starts nothing; the start is
        # checked again, test below), so a pool without restart is not refused for it.
        assert svc.take_orders([deploy(VM)])[0][0] == "accepted"
        await svc.close()

    asyncio.run(go())


def test_a_pool_without_restart_needs_no_lease(tmp_path: Path) -> None:
    async def go() -> None:
        svc, lease = leased(tmp_path)
        spec = build_spec(
            {"name": "web", "descriptor": resolve_text(pool_text(1, restart="never")).to_sf()}
        )
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"spec": spec.encode()}]
        hosted = await svc._hosted("web")
        assert hosted.fenceable == frozenset()
        lease.valid = False
        assert svc.take_orders([deploy(VM)])[0][0] == "accepted"
        assert svc.unit_fenceable("web", VM) is False
        await svc.close()

    asyncio.run(go())


def test_a_restartable_pool_is_fenceable_and_starts_only_under_a_lease(tmp_path: Path) -> None:
    async def go() -> None:
        svc, lease = leased(tmp_path)
        spec = build_spec(
            {"name": "web", "descriptor": resolve_text(pool_text(2, restart="always")).to_sf()}
        )
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"spec": spec.encode()}]
        hosted = await svc._hosted("web")
        assert hosted.fenceable == {VM, "sfConfig:pool:sd1:vm"}
        assert svc.start_refusal("web", VM) is None and lease.rearmed == 1
        lease.guard_armed = False  # a guard is configured but did not take the arm
        assert svc.start_refusal("web", VM) == NO_GUARD
        lease.just_back = True  # a restartable unit waits out the orders' flight time
        assert svc.start_refusal("web", VM) == JUST_BACK
        assert svc.lease_veto(deploy("sfConfig:pool:sd1:vm")) == JUST_BACK
        lease.valid = False
        assert svc.start_refusal("web", VM) == NO_LEASE
        await svc.close()

    asyncio.run(go())


def test_fence_destroys_running_fenceable_vms_and_reports_them_ended(tmp_path: Path) -> None:
    async def go() -> None:
        svc, _ = leased(tmp_path)
        driver = svc.driver = FakeDriver()
        other = "sfConfig:pool:sd1:vm"
        svc.host.handle(hc.Recovered("web", VM, VM, 3, "h1", 1, 256))
        svc.host.handle(hc.Recovered("web", other, other, 3, "h1", 1, 256, state="deployed"))
        assert svc.fenceable() == {("web", VM), ("web", other)}  # unknown policy: fenceable
        assert svc.fence("no majority answered") == [("web", VM)]  # only what runs
        await asyncio.sleep(0.01)
        assert len(driver.destroyed) == 1
        assert svc.host.states("web")[VM] == "deployed"
        _, client = parts(svc)
        sent = [r for q in client.requests if q.get("rpc") == "reports" for r in q["reports"]]
        assert len(sent) == 1 and "fenced: lease lost" in str(sent[0])
        await svc.close()

    asyncio.run(go())


def test_the_shepherd_rebuilds_only_after_the_reclaim_completes(tmp_path: Path) -> None:
    async def go() -> None:
        svc, lease = leased(tmp_path)
        core = StubCore()
        run = ShepherdRun(core)  # type: ignore[arg-type]
        svc.shepherding["web"] = run
        svc._shepherd_action("web", run, sc.ReclaimHost("h2"))
        await asyncio.sleep(0.05)
        assert core.events == []  # the lease may still run: nothing moves
        lease.ended("h2")
        await asyncio.sleep(0.01)
        assert core.events == [sc.HostReclaimed("h2")]
        svc._shepherd_action("web", run, sc.ReclaimHost("h1"))
        await asyncio.sleep(0.01)
        svc._shepherd_action("web", run, sc.CancelReclaim("h1"))  # it came back
        await asyncio.sleep(0.01)
        assert lease.cancelled == ["h1"]
        assert core.events == [sc.HostReclaimed("h2")]
        await svc.close()

    asyncio.run(go())


def test_without_leases_a_lost_host_is_reclaimed_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        core = StubCore()
        run = ShepherdRun(core)  # type: ignore[arg-type]
        svc.shepherding["web"] = run
        svc._shepherd_action("web", run, sc.ReclaimHost("h2"))
        await asyncio.sleep(0.01)
        assert core.events == [sc.HostReclaimed("h2")]
        await svc.close()

    asyncio.run(go())


def test_a_start_up_fence_spares_recovered_vms_the_mesh_never_rebuilds(tmp_path: Path) -> None:
    async def go() -> None:
        svc, _ = leased(tmp_path)
        driver = svc.driver = FakeDriver()
        spec = build_spec(
            {"name": "web", "descriptor": resolve_text(pool_text(1, restart="never")).to_sf()}
        )
        svc.host.handle(hc.Recovered("web", VM, VM, 3, "h1", 1, 256))
        _, client = parts(svc)
        client.replies = [{"spec": spec.encode()}]
        svc.load_policies({"web": spec.digest})  # from the domain's metadata
        await svc.policies_known(5.0)
        assert svc.unit_fenceable("web", VM) is False
        assert svc.fence("no lease covered this host's VMs") == []
        assert svc.fenceable() == frozenset()
        assert driver.destroyed == []
        await svc.close()

    asyncio.run(go())


def test_a_witness_never_shepherds_a_pool(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path, ["h0", "h1", "w"])
        witness = svc.node.core.m["w"]
        svc.node.core.m["w"] = dataclasses.replace(witness, meta={"witness": True})
        owners = {svc.shepherd_for(f"pool-{i}") for i in range(200)}
        assert owners == {"h0", "h1"}
        assert not svc._being_handed_over("pool-1")
        await svc.close()

    asyncio.run(go())


def test_a_restarted_host_without_capacity_yet_is_present_not_lost(tmp_path: Path) -> None:
    """kill -9 and a systemd restart: the host announces its preliminary meta (no capacity
    yet). Its shepherds must keep its VMs where they run (no ReclaimHost, which would
    fence them all), while no new VM goes there until it says what it has."""
    from sdmesh.agent.meta import preliminary_meta, witness_meta
    from sdmesh.pools.placement import Demand, place

    from .cluster import Cluster
    from .test_pool_cores import hosts

    async def go() -> None:
        svc = service(tmp_path, ["h0", "h1", "w"])
        meta = preliminary_meta("qemu:///system", (), [], "127.0.0.1:1")
        svc.node.core.m["h1"] = dataclasses.replace(svc.node.core.m["h1"], meta=meta)
        svc.node.core.m["w"] = dataclasses.replace(
            svc.node.core.m["w"], meta=witness_meta((), "127.0.0.1:2")
        )
        offers = {o.name: o for o in svc.offers()}
        assert set(offers) == {"h1"} and offers["h1"].vcpus == 0  # h0: FakeCore, no meta
        assert place([Demand("vm", 1, 256)], offers.values()).assignments == {}
        await svc.close()

    asyncio.run(go())

    cluster = Cluster(hosts(3))
    cluster.reclaim_delay = None
    core = cluster.submit(pool_text(6, restart="always"), "web", "h0")
    cluster.run()
    placement = dict(core.placement)
    assert "h2" in placement.values()
    restarted = tuple(
        o if o.name != "h2" else dataclasses.replace(o, vcpus=0, memory_mib=0, memory_free_mib=0)
        for o in cluster.offers()
    )
    cluster.feed_shepherd("web", "h0", sc.MembersChanged(restarted, frozenset()))
    cluster.run(until=cluster.now + 30)
    assert cluster.reclaims == [] and core.placement == placement


def test_a_fence_reports_ended_only_once_the_destroy_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destroy that fails is retried (with backoff); until one succeeds the VM may still
    run, so the shepherd hears nothing of it ending (it would rebuild it: two copies)."""
    monkeypatch.setattr(fencing, "FENCE_RETRY_FIRST", 0.01)
    monkeypatch.setattr(fencing, "FENCE_RETRY_MAX", 0.02)

    async def go() -> None:
        svc, _ = leased(tmp_path)
        driver = svc.driver = FakeDriver(failures=3)
        svc.host.handle(hc.Recovered("web", VM, VM, 3, "h1", 1, 256))
        _, client = parts(svc)

        def reports() -> list[object]:
            return [r for q in client.requests if q.get("rpc") == "reports" for r in q["reports"]]

        assert svc.fence("no majority answered") == [("web", VM)]
        await asyncio.sleep(0)
        assert driver.tries == 1 and svc.host.states("web")[VM] == "running"
        assert svc.fence("again") == []  # under way: not twice
        await asyncio.sleep(0.015)
        assert driver.destroyed == [] and reports() == []
        for _ in range(100):
            if driver.destroyed:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        assert driver.tries == 4 and len(driver.destroyed) == 1
        assert svc.host.states("web")[VM] == "deployed"
        assert len(reports()) == 1 and "fenced: lease lost" in str(reports()[0])
        await svc.close()

    asyncio.run(go())


def test_undoing_a_start_retries_its_destroy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fencing, "FENCE_RETRY_FIRST", 0.01)

    async def go() -> None:
        svc, _ = leased(tmp_path)
        driver = svc.driver = FakeDriver(failures=2)
        assert "fenced" in await svc.undo_start("web", VM)
        assert driver.tries == 3 and len(driver.destroyed) == 1
        await svc.close()

    asyncio.run(go())


def test_a_failed_vm_start_destroys_what_it_may_have_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt may create a guest and then fail a later call: before the failure reaches
    the shepherd (which moves the unit elsewhere), the host destroys the domain, retrying;
    a destroy that never succeeds is bounded (the fence guard is the backstop)."""
    monkeypatch.setattr(fencing, "FENCE_RETRY_FIRST", 0.01)

    async def go() -> None:
        svc, _ = leased(tmp_path)
        driver = svc.driver = FakeDriver(failures=1)
        await svc._destroy_failed_start("web", VM)
        assert driver.tries == 2 and len(driver.destroyed) == 1
        monkeypatch.setattr(fencing, "FAILED_START_DESTROY", 0.05)
        svc.driver = FakeDriver(failures=10**6)
        await svc._destroy_failed_start("web", VM)  # returns: bounded
        await svc.close()

    asyncio.run(go())
