"""Qcow2OverlayBackend: a copy-on-write overlay on a shared base image (the default).

``qemu-img create -f qcow2 -F FMT -b BASE`` writes only a header, so a guest disk costs
milliseconds and a few hundred KiB however large the base is. Every overlay depends on the
base staying unchanged: replacing a base takes its host lock exclusively
(``backend.locks.base_image(path).exclusive()``), which waits for overlays being made.
"""

from __future__ import annotations

from pathlib import Path

from sdmesh.storage.defaults import DEFAULT_STATE_DIR, lock_dir_for
from sdmesh.storage.errors import StorageError
from sdmesh.storage.files import SUFFIXES, FileVolumeStore
from sdmesh.storage.images import require_base_file, sniff_format
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import Volume, VolumeRequest
from sdmesh.storage.tools import Runner, check_result, require_tool, run_tool


class Qcow2OverlayBackend:
    """Guest disks as qcow2 overlays of base images, in ``<state_dir>/qcow2``."""

    name = "qcow2"

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        lock_dir: Path | None = None,
        qemu_img: str = "qemu-img",
        runner: Runner = run_tool,
    ) -> None:
        self.locks = HostLocks(lock_dir_for(state_dir, lock_dir))
        self.store = FileVolumeStore(state_dir / self.name, self.name, self.locks)
        self._qemu_img = qemu_img
        self._runner = runner

    async def check(self, request: VolumeRequest) -> None:
        require_tool(self._qemu_img)
        base = require_base_file(request.base_image)
        if request.base_format is None:
            sniff_format(base)  # refuses formats sdmesh does not layer on
        if request.size_bytes is not None and request.size_bytes <= 0:
            raise StorageError(f"volume size must be positive, got {request.size_bytes}")
        request.volume_name()

    async def prepare(self, request: VolumeRequest) -> Volume:
        await self.check(request)
        base = Path(request.base_image).resolve()
        async with self.locks.base_image(str(base)).shared():
            fmt = request.base_format or sniff_format(base)

            async def produce(target: Path) -> None:
                argv = [self._qemu_img, "create", "-q", "-f", "qcow2", "-F", fmt]
                argv += ["-b", str(base), str(target)]
                if request.size_bytes is not None:
                    argv.append(str(request.size_bytes))
                check_result(
                    await self._runner(argv),
                    f"creating a qcow2 overlay of {base}",
                    hint="a larger size than the base's is allowed; a smaller one is not",
                )

            return await self.store.create(
                request,
                volume_format="qcow2",
                suffix=SUFFIXES["qcow2"],
                produce=produce,
                base_image=str(base),
                has_backing_file=True,
            )

    async def release(self, volume: Volume) -> bool:
        return await self.store.release(volume)

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        return await self.store.list_owned(pool)
