"""A directory of tagged volume files: the common half of the file-backed backends.

Creation is crash-safe: the content is produced under a hidden ``.NAME.partial-XXXX`` name,
tagged, and only then renamed into place, so a final name always carries its tag. A crash
leaves a partial file that :meth:`FileVolumeStore.list_owned` reports (``partial=True``) and
the reaper removes once it is older than its grace period.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sdmesh.safeio import create_private, ensure_private_dir, restrict_mode
from sdmesh.storage.errors import StorageError, VolumeExists
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import OwnerTag, Volume, VolumeFormat, VolumeRequest
from sdmesh.storage.tags import (
    decode_record,
    encode_record,
    is_sidecar,
    move_file_tag,
    read_file_tag,
    remove_file_and_tag,
    write_file_tag,
)

PARTIAL_MARKER = ".partial-"
#: Volume directories: QEMU runs as another user and needs to traverse them, not list them.
VOLUME_DIR_MODE = 0o711
SUFFIXES: dict[str, str] = {"qcow2": ".qcow2", "raw": ".img", "iso": ".iso"}

Producer = Callable[[Path], Awaitable[None]]


def _same_owner(a: OwnerTag, b: OwnerTag) -> bool:
    return a.pool == b.pool and a.path == b.path


class FileVolumeStore:
    """Volumes of one backend, as files in one directory owned by sdmesh."""

    def __init__(self, directory: Path, backend: str, locks: HostLocks) -> None:
        self.directory = directory
        self.backend = backend
        self.locks = locks

    def location(self, request: VolumeRequest, suffix: str) -> Path:
        return self.directory / (request.volume_name() + suffix)

    async def create(
        self,
        request: VolumeRequest,
        *,
        volume_format: VolumeFormat,
        suffix: str,
        produce: Producer,
        base_image: str | None = None,
        has_backing_file: bool = False,
    ) -> Volume:
        """Produce a tagged volume, or return the one this owner already has under the name."""
        # 0711: QEMU (another user) must reach the disks it is given, but not list them.
        ensure_private_dir(self.directory, VOLUME_DIR_MODE, what="volume directory")
        final = self.location(request, suffix)
        async with self.locks.volume(str(final)).exclusive():
            if final.exists() or final.is_symlink():
                existing = self.load(final)
                if existing is not None and _same_owner(existing.owner, request.owner):
                    return existing
                owner = "an untagged file" if existing is None else f"pool {existing.owner.pool!r}"
                raise VolumeExists(
                    f"{final} already exists and belongs to {owner}",
                    hint="choose another volume name, or release the old volume first",
                )
            volume = Volume(
                path=final,
                format=volume_format,
                kind="file",
                backend=self.backend,
                owner=request.owner,
                created_at=time.time(),
                base_image=base_image,
                has_backing_file=has_backing_file,
            )
            partial = final.with_name(f".{final.name}{PARTIAL_MARKER}{secrets.token_hex(4)}")
            try:
                # Created here, 0600 and O_EXCL: the producer writes into a file nobody else
                # could have planted or opened, and it is private from its first byte.
                os.close(create_private(partial))
                await produce(partial)
                restrict_mode(partial, 0o600)  # in case a tool replaced the file
                write_file_tag(partial, encode_record(volume))
                move_file_tag(partial, final)
                os.rename(partial, final)
            except BaseException:
                remove_file_and_tag(partial)
                raise
            return volume

    def load(self, path: Path) -> Volume | None:
        """The volume a tagged file describes, or None when it is not ours."""
        partial = path.name.startswith(".") and PARTIAL_MARKER in path.name
        data = read_file_tag(path)
        if data is None:
            if not partial:
                return None
            # Crashed before tagging: ours by name, age from mtime, owner unknown.
            return Volume(
                path=path,
                format="raw",
                kind="file",
                backend=self.backend,
                owner=OwnerTag(pool="", path=""),
                created_at=path.stat().st_mtime,
                partial=True,
            )
        volume = decode_record(data, path, partial=partial)
        if volume is None or volume.backend != self.backend:
            return None
        return volume

    async def release(self, volume: Volume) -> bool:
        path = Path(volume.path)
        if path.parent.resolve() != self.directory.resolve():
            raise StorageError(
                f"refusing to remove {path}: it is outside {self.directory}",
                hint="only volumes this backend created can be released through it",
            )
        async with self.locks.volume(str(path)).exclusive():
            return remove_file_and_tag(path)

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        return await asyncio.to_thread(self._scan, pool)

    def _scan(self, pool: str | None) -> list[Volume]:
        if not self.directory.is_dir():
            return []
        found: list[Volume] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if is_sidecar(path) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    volume = self.load(path)
                except FileNotFoundError:
                    continue  # removed while we looked
                if volume is None:
                    continue
                if pool is None or volume.owner.pool == pool:
                    found.append(volume)
        found.sort(key=lambda volume: volume.path.name)
        return found
