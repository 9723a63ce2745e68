"""LVMStorageBackend: an LVM snapshot of a base logical volume.

The snapshot is tagged (``sdmesh`` plus a base32 owner record) so ``lvs @sdmesh`` finds
every leftover. Snapshots need the kernel's device-mapper: where it is missing the backend
says so at deploy time (``check``), before anything is created, instead of failing halfway.
Thin origins get thin snapshots (no size, activation skip off); thick origins get a
snapshot sized by ``snapshot_size`` (default ``100%ORIGIN``, which can never overflow).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sdmesh.storage.defaults import DEFAULT_STATE_DIR, lock_dir_for
from sdmesh.storage.errors import (
    BaseImageNotFound,
    StorageError,
    StorageUnavailable,
    VolumeBusy,
    VolumeExists,
)
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import Volume, VolumeRequest
from sdmesh.storage.tags import LV_MARKER_TAG, lv_tags, volume_from_lv_tags
from sdmesh.storage.tools import Runner, ToolResult, check_result, require_tool, run_tool

DEVICE_MAPPER_CONTROL = Path("/dev/mapper/control")
_LV_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
_REPORT_FIELDS = "lv_name,vg_name,lv_path,lv_tags,segtype,origin"


def device_mapper_problem(control: Path = DEVICE_MAPPER_CONTROL) -> str | None:
    """Why device-mapper cannot be used here, or None. The control node may exist in a
    container whose kernel has no device-mapper driver: only opening it tells."""
    if not control.exists():
        return f"{control} is missing"
    try:
        fd = os.open(control, os.O_RDONLY)
    except OSError as error:
        return f"opening {control}: {error.strerror or error}"
    os.close(fd)
    return None


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    name: str
    path: str
    tags: tuple[str, ...]
    segtype: str
    origin: str

    @property
    def ref(self) -> str:
        return f"{self.vg}/{self.name}"


def parse_lv_ref(base_image: str) -> tuple[str, str]:
    """``vg/lv`` or ``/dev/vg/lv`` → (vg, lv)."""
    ref = base_image.removeprefix("/dev/")
    parts = ref.split("/")
    if len(parts) != 2 or not all(_LV_NAME.fullmatch(part) for part in parts):
        raise BaseImageNotFound(
            f"base volume {base_image!r} is not of the form VG/LV or /dev/VG/LV",
            hint="name the base logical volume as in `lvs`, e.g. vg0/slc3-base",
        )
    return parts[0], parts[1]


def parse_lvs_report(stdout: str) -> list[LogicalVolume]:
    """Rows of ``lvs --reportformat json``."""
    if not stdout.strip():
        return []
    document = json.loads(stdout)
    rows: list[LogicalVolume] = []
    for report in document.get("report", []):
        for row in report.get("lv", []):
            tags = tuple(tag for tag in str(row.get("lv_tags", "")).split(",") if tag)
            rows.append(
                LogicalVolume(
                    vg=str(row["vg_name"]),
                    name=str(row["lv_name"]),
                    path=str(row.get("lv_path") or f"/dev/{row['vg_name']}/{row['lv_name']}"),
                    tags=tags,
                    segtype=str(row.get("segtype", "")),
                    origin=str(row.get("origin", "")),
                )
            )
    return rows


def _not_found(result: ToolResult) -> bool:
    text = (result.stderr + result.stdout).lower()
    return "not found" in text or "failed to find" in text


class LVMStorageBackend:
    """Guest disks as snapshots of base logical volumes."""

    name = "lvm"

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        lock_dir: Path | None = None,
        snapshot_size: str = "100%ORIGIN",
        runner: Runner = run_tool,
        device_mapper_control: Path = DEVICE_MAPPER_CONTROL,
    ) -> None:
        self.locks = HostLocks(lock_dir_for(state_dir, lock_dir))
        self._snapshot_size = snapshot_size
        self._runner = runner
        self._dm_control = device_mapper_control

    def _require_lvm(self) -> None:
        for tool in ("lvs", "lvcreate", "lvremove"):
            require_tool(tool)
        problem = device_mapper_problem(self._dm_control)
        if problem is not None:
            raise StorageUnavailable(
                f"device-mapper is not available on this host ({problem}), "
                "so LVM snapshots cannot be created",
                hint="load it with `modprobe dm_snapshot`, or give this pool the qcow2 or "
                "loopback storage backend",
            )

    async def _lvs(self, *selectors: str) -> tuple[ToolResult, list[LogicalVolume]]:
        argv = ["lvs", "--reportformat", "json", "--options", _REPORT_FIELDS, *selectors]
        result = await self._runner(argv)
        if result.returncode != 0:
            return result, []
        return result, parse_lvs_report(result.stdout)

    async def _origin(self, base_image: str) -> LogicalVolume:
        vg, lv = parse_lv_ref(base_image)
        result, rows = await self._lvs(f"{vg}/{lv}")
        if result.returncode != 0 and not _not_found(result):
            check_result(result, f"looking up base volume {vg}/{lv}")
        if not rows:
            raise BaseImageNotFound(
                f"base logical volume {vg}/{lv} does not exist on this host",
                hint="create it (lvcreate + dd the image in), or place the pool elsewhere",
            )
        return rows[0]

    async def check(self, request: VolumeRequest) -> None:
        self._require_lvm()
        if request.size_bytes is not None:
            raise StorageError(
                "an LVM snapshot always has its origin's size",
                hint="resize the base volume, or use the qcow2 backend for a larger disk",
            )
        if not _LV_NAME.fullmatch(request.volume_name()):
            raise StorageError(f"{request.volume_name()!r} is not a valid LV name")
        await self._origin(request.base_image)

    async def prepare(self, request: VolumeRequest) -> Volume:
        await self.check(request)
        origin = await self._origin(request.base_image)
        name = request.volume_name()
        ref = f"{origin.vg}/{name}"
        async with (
            self.locks.base_image(f"lvm:{origin.ref}").shared(),
            self.locks.volume(f"lvm:{ref}").exclusive(),
        ):
            _, existing_rows = await self._lvs(ref)
            if existing_rows:
                existing = volume_from_lv_tags(
                    list(existing_rows[0].tags), Path(existing_rows[0].path)
                )
                if existing is not None and (existing.owner.pool, existing.owner.path) == (
                    request.owner.pool,
                    request.owner.path,
                ):
                    return existing
                raise VolumeExists(
                    f"logical volume {ref} already exists and is not this component's",
                    hint="choose another volume name, or remove the old volume first",
                )
            volume = Volume(
                path=Path(f"/dev/{origin.vg}/{name}"),
                format="raw",
                kind="block",
                backend=self.name,
                owner=request.owner,
                created_at=time.time(),
                base_image=origin.ref,
            )
            argv = ["lvcreate", "--snapshot", "--name", name]
            if origin.segtype == "thin":
                argv += ["--setactivationskip", "n"]
            elif self._snapshot_size.upper().endswith("%ORIGIN"):
                argv += ["--extents", self._snapshot_size]
            else:
                argv += ["--size", self._snapshot_size]
            for tag in lv_tags(volume):
                argv += ["--addtag", tag]
            argv.append(origin.ref)
            check_result(
                await self._runner(argv),
                f"snapshotting {origin.ref}",
                hint="check free extents in the volume group (vgs) and that dm_snapshot is loaded",
            )
            return volume

    async def release(self, volume: Volume) -> bool:
        vg, lv = parse_lv_ref(str(volume.path))
        async with self.locks.volume(f"lvm:{vg}/{lv}").exclusive():
            _, rows = await self._lvs(f"{vg}/{lv}")
            if not rows:
                return False
            if LV_MARKER_TAG not in rows[0].tags:
                raise StorageError(f"refusing to remove {vg}/{lv}: it carries no sdmesh tag")
            result = await self._runner(["lvremove", "--yes", f"{vg}/{lv}"])
            if result.returncode != 0:
                if _not_found(result):
                    return False
                if "open" in result.stderr.lower() or "in use" in result.stderr.lower():
                    raise VolumeBusy(
                        f"{vg}/{lv} is still open",
                        hint="destroy the domain using it before releasing its disk",
                    )
                check_result(result, f"removing {vg}/{lv}")
            return True

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        try:
            require_tool("lvs")
        except StorageUnavailable:
            return []  # no LVM on this host: nothing of ours can be there
        _, rows = await self._lvs(f"@{LV_MARKER_TAG}")
        found = []
        for row in rows:
            volume = volume_from_lv_tags(list(row.tags), Path(row.path))
            if volume is not None and (pool is None or volume.owner.pool == pool):
                found.append(volume)
        return found
