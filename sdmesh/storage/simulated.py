"""Disks for libvirt's test driver: tagged placeholder files instead of image copies.

The test driver never reads a disk, and the tutorial's base images
(``/data/xen/slc3-smartfrog.img``) exist on no machine. Placeholders keep everything else
real: volumes are created, tagged with their owner, listed, reaped and released exactly like
the loopback backend's, so leak checks on simulated hosts mean something.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sdmesh.storage.defaults import DEFAULT_STATE_DIR, lock_dir_for
from sdmesh.storage.files import SUFFIXES, FileVolumeStore
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import Volume, VolumeRequest


class SimulatedStorageBackend:
    """Placeholder volumes in ``<state_dir>/simulated``, one per guest disk."""

    name = "simulated"

    def __init__(
        self, state_dir: Path = DEFAULT_STATE_DIR, *, lock_dir: Path | None = None
    ) -> None:
        self.locks = HostLocks(lock_dir_for(state_dir, lock_dir))
        self.store = FileVolumeStore(state_dir / self.name, self.name, self.locks)

    async def check(self, request: VolumeRequest) -> None:
        request.volume_name()

    async def prepare(self, request: VolumeRequest) -> Volume:
        await self.check(request)
        volume_format = request.base_format or "raw"

        async def produce(target: Path) -> None:
            await asyncio.to_thread(target.write_bytes, b"")

        return await self.store.create(
            request,
            volume_format=volume_format,
            suffix=SUFFIXES[volume_format],
            produce=produce,
            base_image=request.base_image,
        )

    async def release(self, volume: Volume) -> bool:
        return await self.store.release(volume)

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        return await self.store.list_owned(pool)
