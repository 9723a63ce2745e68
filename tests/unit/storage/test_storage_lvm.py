"""LVMStorageBackend against a scripted lvm (no volume group needed)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from sdmesh.storage.errors import (
    BaseImageNotFound,
    StorageError,
    StorageUnavailable,
    VolumeBusy,
    VolumeExists,
)
from sdmesh.storage.lvm import LVMStorageBackend, parse_lv_ref, parse_lvs_report
from sdmesh.storage.model import OwnerTag, Volume, VolumeRequest
from sdmesh.storage.tools import ToolResult

OWNER = OwnerTag("pool-1", "sfConfig:lvm", 2)


class FakeLvm:
    """Just enough of lvs/lvcreate/lvremove: LVs in a dict, every command recorded."""

    def __init__(self) -> None:
        self.lvs: dict[str, dict[str, str]] = {
            "vg0/base": {"segtype": "linear", "lv_tags": ""},
            "vg0/thinbase": {"segtype": "thin", "lv_tags": ""},
        }
        self.calls: list[list[str]] = []
        self.busy: set[str] = set()

    def _row(self, ref: str) -> dict[str, str]:
        vg, name = ref.split("/")
        return {
            "lv_name": name,
            "vg_name": vg,
            "lv_path": f"/dev/{ref}",
            "origin": "",
            **self.lvs[ref],
        }

    async def __call__(self, argv: Sequence[str]) -> ToolResult:
        argv = list(argv)
        self.calls.append(argv)
        ok = ToolResult(tuple(argv), 0, "", "")
        if argv[0] == "lvs":
            selector = argv[-1]
            if selector.startswith("@"):
                rows = [
                    self._row(r)
                    for r, lv in self.lvs.items()
                    if selector[1:] in lv["lv_tags"].split(",")
                ]
            elif selector in self.lvs:
                rows = [self._row(selector)]
            else:
                return ToolResult(
                    tuple(argv), 5, "", f'  Failed to find logical volume "{selector}"'
                )
            return ToolResult(tuple(argv), 0, json.dumps({"report": [{"lv": rows}]}), "")
        if argv[0] == "lvcreate":
            name = argv[argv.index("--name") + 1]
            origin = argv[-1]
            tags = [argv[i + 1] for i, a in enumerate(argv) if a == "--addtag"]
            self.lvs[f"{origin.split('/')[0]}/{name}"] = {
                "segtype": "linear",
                "lv_tags": ",".join(tags),
            }
            return ok
        if argv[0] == "lvremove":
            ref = argv[-1]
            if ref in self.busy:
                return ToolResult(
                    tuple(argv),
                    5,
                    "",
                    f"  Logical volume {ref} contains a filesystem in use.\n  Can't remove open logical volume",
                )
            self.lvs.pop(ref)
            return ok
        raise AssertionError(argv)


@pytest.fixture
def lvm(monkeypatch: pytest.MonkeyPatch) -> FakeLvm:
    monkeypatch.setattr(shutil, "which", lambda tool: f"/sbin/{tool}")
    return FakeLvm()


def backend(tmp_path: Path, fake: FakeLvm, dm: bool = True) -> LVMStorageBackend:
    control = tmp_path / "control"
    if dm:
        control.touch()
    return LVMStorageBackend(tmp_path, runner=fake, device_mapper_control=control)


async def test_snapshot_is_created_tagged_listed_and_removed(tmp_path: Path, lvm: FakeLvm) -> None:
    lvm_backend = backend(tmp_path, lvm)
    volume = await lvm_backend.prepare(VolumeRequest(OWNER, "/dev/vg0/base", name="dom1"))
    create = next(call for call in lvm.calls if call[0] == "lvcreate")
    assert create[:4] == ["lvcreate", "--snapshot", "--name", "dom1"]
    assert create[4:6] == ["--extents", "100%ORIGIN"] and create[-1] == "vg0/base"
    assert (
        volume.path == Path("/dev/vg0/dom1") and volume.kind == "block" and volume.format == "raw"
    )
    again = await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/base", name="dom1"))
    assert again.owner == OWNER and again.created_at == volume.created_at  # idempotent
    listed = await lvm_backend.list_owned("pool-1")
    assert [v.path for v in listed] == [volume.path] and listed[0].owner == OWNER
    assert await lvm_backend.list_owned("other") == []
    assert await lvm_backend.release(volume) is True
    assert await lvm_backend.release(volume) is False
    assert await lvm_backend.list_owned() == []


async def test_thin_origin_gets_a_thin_snapshot(tmp_path: Path, lvm: FakeLvm) -> None:
    await backend(tmp_path, lvm).prepare(VolumeRequest(OWNER, "vg0/thinbase", name="t1"))
    create = next(call for call in lvm.calls if call[0] == "lvcreate")
    assert "--setactivationskip" in create and "--extents" not in create and "--size" not in create


async def test_fixed_snapshot_size(tmp_path: Path, lvm: FakeLvm) -> None:
    lvm_backend = LVMStorageBackend(
        tmp_path, runner=lvm, snapshot_size="2G", device_mapper_control=tmp_path
    )
    await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/base", name="s1"))
    create = next(call for call in lvm.calls if call[0] == "lvcreate")
    assert create[4:6] == ["--size", "2G"]


async def test_missing_device_mapper_is_a_clear_deploy_time_error(
    tmp_path: Path, lvm: FakeLvm
) -> None:
    with pytest.raises(StorageUnavailable, match="device-mapper") as caught:
        await backend(tmp_path, lvm, dm=False).check(VolumeRequest(OWNER, "vg0/base"))
    assert "qcow2" in str(caught.value)  # says what to do instead
    assert not any(call[0] == "lvcreate" for call in lvm.calls)


async def test_missing_lvm_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    lvm_backend = LVMStorageBackend(tmp_path, runner=FakeLvm())
    with pytest.raises(StorageUnavailable, match="apt-get install lvm2"):
        await lvm_backend.check(VolumeRequest(OWNER, "vg0/base"))
    assert await lvm_backend.list_owned() == []  # nothing of ours can be there


async def test_refusals(tmp_path: Path, lvm: FakeLvm) -> None:
    lvm_backend = backend(tmp_path, lvm)
    with pytest.raises(BaseImageNotFound, match="does not exist"):
        await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/nope"))
    with pytest.raises(BaseImageNotFound, match="VG/LV"):
        await lvm_backend.prepare(VolumeRequest(OWNER, "/images/base.img"))
    with pytest.raises(StorageError, match="origin's size"):
        await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/base", size_bytes=10))
    await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/base", name="taken"))
    with pytest.raises(VolumeExists):
        await lvm_backend.prepare(VolumeRequest(OwnerTag("pool-2", "x"), "vg0/base", name="taken"))
    base_as_volume = Volume(Path("/dev/vg0/base"), "raw", "block", "lvm", OWNER, 0.0)
    with pytest.raises(StorageError, match="no sdmesh tag"):
        await lvm_backend.release(base_as_volume)


async def test_busy_volume(tmp_path: Path, lvm: FakeLvm) -> None:
    lvm_backend = backend(tmp_path, lvm)
    volume = await lvm_backend.prepare(VolumeRequest(OWNER, "vg0/base", name="busy"))
    lvm.busy.add("vg0/busy")
    with pytest.raises(VolumeBusy, match="destroy the domain"):
        await lvm_backend.release(volume)


def test_parsers() -> None:
    assert parse_lv_ref("/dev/vg0/base") == ("vg0", "base") == parse_lv_ref("vg0/base")
    assert parse_lvs_report("") == []
    rows = parse_lvs_report(
        '{"report":[{"lv":[{"lv_name":"a","vg_name":"v","lv_path":"","lv_tags":"x,y","segtype":"thin","origin":""}]}]}'
    )
    assert rows[0].ref == "v/a" and rows[0].path == "/dev/v/a" and rows[0].tags == ("x", "y")
