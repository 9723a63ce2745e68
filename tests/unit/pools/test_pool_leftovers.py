"""Terminate leaves nothing: seeds and disks of VMs that died with an earlier process of the
agent (kill -9, or a leave and rejoin) are removed at recovery, on the pool's termination,
and when a shepherd releases a leaf this host no longer holds (issue 14 items 6-7)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from sdmesh.pools import host as hc
from sdmesh.pools.records import Order

from .test_pool_service_ends import service

VM = "sfConfig:pool:sd0:vm"
DISK = "sfConfig:pool:sd0:disk"


class NoDomains:
    """libvirt after a kill -9 on the test driver: the old process's domains are gone."""

    async def list_managed(self, pool: str | None = None) -> list[object]:
        return []

    async def destroy(self, name: str) -> None:
        raise AssertionError("no domain to destroy")


async def _volume(
    store: object, pool: str, path: str, generation: int, suffix: str, node: str = "h0"
) -> None:
    from sdmesh.storage import OwnerTag, VolumeRequest

    async def produce(target: Path) -> None:
        target.write_bytes(b"x")

    await store.create(  # type: ignore[attr-defined]
        VolumeRequest(owner=OwnerTag(pool, path, generation, node), base_image=""),
        volume_format="raw",
        suffix=suffix,
        produce=produce,
    )


async def _leftovers(tmp_path: Path, generation: int = 3) -> None:
    """A seed of ``web``'s VM and a disk of it, as a dead process left them."""
    from sdmesh.hypervisor.nocloud import NoCloudSeedStore
    from sdmesh.storage.simulated import SimulatedStorageBackend

    await _volume(NoCloudSeedStore(tmp_path / "volumes").store, "web", VM, generation, ".iso")
    disks = SimulatedStorageBackend(tmp_path / "volumes")
    await _volume(disks.store, "web", DISK, generation, ".img")


async def _left(tmp_path: Path, pool: str = "web") -> list[str]:
    from sdmesh.hypervisor.nocloud import NoCloudSeedStore
    from sdmesh.storage.simulated import SimulatedStorageBackend

    seeds = await NoCloudSeedStore(tmp_path / "volumes").list_owned(pool)
    disks = await SimulatedStorageBackend(tmp_path / "volumes").list_owned(pool)
    return sorted(f"{v.owner.path}@{v.owner.generation}" for v in seeds + disks)


def _restarted(tmp_path: Path) -> object:
    svc = service(tmp_path)
    svc.driver = NoDomains()  # type: ignore[assignment]
    svc.caps = SimpleNamespace(cpus=4, memory_mib=4096, driver="test")  # type: ignore[assignment]
    return svc


async def _settle(svc: object) -> None:
    while tasks := [t for t in svc._tasks if not t.done()]:  # type: ignore[attr-defined]
        await asyncio.gather(*tasks, return_exceptions=True)


def test_recovery_removes_a_seed_whose_vm_died_with_the_old_process(tmp_path: Path) -> None:
    async def go() -> None:
        await _leftovers(tmp_path)
        svc = _restarted(tmp_path)
        await svc._recover()  # type: ignore[attr-defined]
        assert svc.host.inventory("web") == {DISK: 3}  # type: ignore[attr-defined]
        assert await _left(tmp_path) == [f"{DISK}@3"]  # the seed is gone, never a VM
        await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_a_pool_termination_sweeps_what_the_core_does_not_hold(tmp_path: Path) -> None:
    async def go() -> None:
        await _leftovers(tmp_path, generation=3)
        from sdmesh.hypervisor.nocloud import NoCloudSeedStore

        seeds = NoCloudSeedStore(tmp_path / "volumes").store
        await _volume(seeds, "web", "sfConfig:pool:sd1:vm", 5, ".iso")
        svc = _restarted(tmp_path)
        svc._host_feed(hc.PoolTerminated("web", 4))  # type: ignore[attr-defined]
        await _settle(svc)
        # The resubmission's seed (generation 5) is not the ended pool's.
        assert await _left(tmp_path) == ["sfConfig:pool:sd1:vm@5"]
        svc._host_feed(hc.PoolTerminated("web", None))  # type: ignore[attr-defined]
        await _settle(svc)
        assert await _left(tmp_path) == []
        await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_a_release_of_a_leaf_not_held_here_removes_its_leftovers(tmp_path: Path) -> None:
    async def go() -> None:
        await _leftovers(tmp_path, generation=3)
        svc = _restarted(tmp_path)
        order = Order("web", 4, "h1", "d" * 64, VM, "terminate", VM)
        assert svc.take_orders([order]) == [["accepted", "", 4]]  # type: ignore[attr-defined]
        await _settle(svc)
        assert await _left(tmp_path) == [f"{DISK}@3"]  # the VM's seed, nothing else
        svc._host_feed(hc.PoolTerminated("web", 4))  # type: ignore[attr-defined]
        await _settle(svc)
        assert await _left(tmp_path) == []
        await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_another_agents_volumes_on_a_shared_store_are_never_swept(tmp_path: Path) -> None:
    """Two agents may share a volume group (LVM lists every agent's volumes): a sweep here
    removes only what this agent made (review finding)."""

    async def go() -> None:
        from sdmesh.hypervisor.nocloud import NoCloudSeedStore

        seeds = NoCloudSeedStore(tmp_path / "volumes").store
        await _volume(seeds, "web", VM, 3, ".iso", node="h9")
        svc = _restarted(tmp_path)
        svc._host_feed(hc.PoolTerminated("web", None))  # type: ignore[attr-defined]
        await _settle(svc)
        assert await _left(tmp_path) == [f"{VM}@3"]
        await svc.close()  # type: ignore[attr-defined]

    asyncio.run(go())
