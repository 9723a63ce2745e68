"""LoopbackStorageBackend: a private sparse copy of ``baseImage`` (SmartDomains' tutorial).

Each guest gets a full, independent file (attached by the hypervisor through a loop device
or its own file backend), so the base may change afterwards. The copy keeps holes and skips
zero blocks, so it costs only the base's real data.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sdmesh.storage.defaults import DEFAULT_STATE_DIR, lock_dir_for
from sdmesh.storage.errors import StorageError
from sdmesh.storage.files import SUFFIXES, FileVolumeStore
from sdmesh.storage.images import require_base_file, sniff_format, sparse_copy
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import Volume, VolumeRequest


class LoopbackStorageBackend:
    """Guest disks as sparse copies of base images, in ``<state_dir>/loopback``."""

    name = "loopback"

    def __init__(
        self, state_dir: Path = DEFAULT_STATE_DIR, *, lock_dir: Path | None = None
    ) -> None:
        self.locks = HostLocks(lock_dir_for(state_dir, lock_dir))
        self.store = FileVolumeStore(state_dir / self.name, self.name, self.locks)

    async def check(self, request: VolumeRequest) -> None:
        base = require_base_file(request.base_image)
        fmt = request.base_format or sniff_format(base)
        if request.size_bytes is not None:
            if fmt != "raw":
                raise StorageError(
                    "a loopback copy can only grow raw images",
                    hint="use the qcow2 backend to give a qcow2 base a larger virtual size",
                )
            if request.size_bytes < base.stat().st_size:
                raise StorageError(
                    f"requested size {request.size_bytes} is smaller than {base} "
                    f"({base.stat().st_size} bytes)"
                )
        request.volume_name()

    async def prepare(self, request: VolumeRequest) -> Volume:
        await self.check(request)
        base = Path(request.base_image).resolve()
        async with self.locks.base_image(str(base)).shared():
            fmt = request.base_format or sniff_format(base)

            async def produce(target: Path) -> None:
                await asyncio.to_thread(sparse_copy, base, target, request.size_bytes)

            return await self.store.create(
                request,
                volume_format=fmt,
                suffix=SUFFIXES[fmt],
                produce=produce,
                base_image=str(base),
            )

    async def release(self, volume: Volume) -> bool:
        return await self.store.release(volume)

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        return await self.store.list_owned(pool)
