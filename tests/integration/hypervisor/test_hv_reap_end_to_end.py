"""The reaper on a simulated host: leftovers of dead pools go, live pools stay."""

from __future__ import annotations

import time
from pathlib import Path

from hv_support import MakeHost, meta, vm

from sdmesh.hypervisor import DiskSpec, LibvirtDriver
from sdmesh.hypervisor.nocloud import NoCloudSeedStore, seed_documents
from sdmesh.hypervisor.reaper import reap
from sdmesh.hypervisor.spec import GuestIdentity
from sdmesh.storage import LoopbackStorageBackend, OwnerTag, VolumeRequest


async def test_reap_removes_what_dead_pools_left(make_host: MakeHost, tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"base" * 1024)
    storage = LoopbackStorageBackend(tmp_path / "state")
    seeds = NoCloudSeedStore(tmp_path / "state")
    async with LibvirtDriver(make_host()) as driver:
        for pool in ("alive", "dead"):
            volume = await storage.prepare(VolumeRequest(OwnerTag(pool, "vm"), str(base)))
            await seeds.write(
                OwnerTag(pool, "vm"), seed_documents(GuestIdentity("h"), instance_id=pool)
            )
            spec = vm(f"{pool}-vm", disks=(DiskSpec.from_volume(volume),))
            await driver.define_and_start(spec, meta(pool, "vm"))

        # Inside the grace period nothing is touched, even for a pool nobody knows.
        report = await reap(driver, [storage, seeds], live_pools={"alive"}, grace_s=3600)
        assert report.destroyed == [] and report.released == []
        assert report.plan.kept_in_grace == 3

        report = await reap(
            driver, [storage, seeds], live_pools={"alive"}, grace_s=3600, now=time.time() + 7200
        )
        assert report.destroyed == ["dead-vm"] and report.failures == []
        assert sorted(v.backend for v in report.released) == ["loopback", "nocloud"]
        assert [d.metadata.pool for d in await driver.list_managed()] == ["alive"]
        assert [v.owner.pool for v in await storage.list_owned()] == ["alive"]
        assert [v.owner.pool for v in await seeds.list_owned()] == ["alive"]

        # A termination record needs no grace.
        report = await reap(
            driver, [storage, seeds], live_pools={"alive"}, terminated_pools={"alive"}, grace_s=3600
        )
        assert report.destroyed == ["alive-vm"] and len(report.released) == 2
