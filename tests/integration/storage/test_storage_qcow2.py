"""Qcow2OverlayBackend against real qemu-img."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from storage_support import MIB, make_sparse_base, needs_qemu_img, qemu_img_info

from sdmesh.storage import (
    OwnerTag,
    Qcow2OverlayBackend,
    StorageUnavailable,
    ToolFailed,
    VolumeExists,
    VolumeRequest,
)
from sdmesh.storage.tags import read_file_tag
from sdmesh.storage.tools import ToolResult

pytestmark = needs_qemu_img


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_sparse_base(tmp_path / "base.img")


def backend(tmp_path: Path) -> Qcow2OverlayBackend:
    return Qcow2OverlayBackend(tmp_path / "state")


async def test_overlay_is_tagged_backed_by_the_base_and_released(
    tmp_path: Path, base: Path
) -> None:
    qcow2 = backend(tmp_path)
    owner = OwnerTag("pool-1", "sfConfig:vm1", 2, "node-a")
    volume = await qcow2.prepare(VolumeRequest(owner, str(base)))
    info = qemu_img_info(volume.path)
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MIB
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "raw"
    assert volume.has_backing_file and volume.format == "qcow2" and volume.kind == "file"
    assert volume.path.stat().st_size < MIB  # a header, not a copy
    assert read_file_tag(volume.path) is not None
    assert await qcow2.list_owned("pool-1") == [volume]
    assert await qcow2.release(volume) is True
    assert not volume.path.exists() and await qcow2.list_owned() == []
    assert await qcow2.release(volume) is False
    assert base.exists()


async def test_qcow2_base_and_larger_virtual_size(tmp_path: Path, base: Path) -> None:
    qcow2_base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(base), str(qcow2_base)], check=True)
    qcow2 = backend(tmp_path)
    volume = await qcow2.prepare(
        VolumeRequest(OwnerTag("p", "a"), str(qcow2_base), size_bytes=256 * MIB)
    )
    info = qemu_img_info(volume.path)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 256 * MIB


async def test_fifty_overlays_of_one_base_at_once(tmp_path: Path, base: Path) -> None:
    qcow2 = backend(tmp_path)
    requests = [VolumeRequest(OwnerTag("pool-50", f"vm{i}"), str(base)) for i in range(50)]
    volumes = await asyncio.gather(*(qcow2.prepare(r) for r in requests))
    assert len({v.path for v in volumes}) == 50
    for volume in volumes:
        assert qemu_img_info(volume.path)["backing-filename"] == str(base)
    assert sorted(v.path for v in await qcow2.list_owned("pool-50")) == sorted(
        v.path for v in volumes
    )
    assert all(await asyncio.gather(*(qcow2.release(v) for v in volumes)))
    assert [p.name for p in (tmp_path / "state" / "qcow2").iterdir()] == []


async def test_base_writer_and_overlay_makers_exclude_each_other(
    tmp_path: Path, base: Path
) -> None:
    qcow2 = backend(tmp_path)
    other_instance = Qcow2OverlayBackend(tmp_path / "state")  # same host lock directory
    released_at = 0.0

    async def replace_base() -> None:
        nonlocal released_at
        async with other_instance.locks.base_image(str(base)).exclusive():
            await asyncio.sleep(0.3)
            released_at = time.time()

    writer = asyncio.create_task(replace_base())
    await asyncio.sleep(0.05)  # the writer holds the base now
    volumes = await asyncio.gather(
        *(qcow2.prepare(VolumeRequest(OwnerTag("p", f"v{i}"), str(base))) for i in range(10))
    )
    await writer
    assert min(volume.created_at for volume in volumes) >= released_at > 0


async def test_same_owner_gets_its_volume_back_other_owner_is_refused(
    tmp_path: Path, base: Path
) -> None:
    first, second = backend(tmp_path), backend(tmp_path)
    request = VolumeRequest(OwnerTag("p", "a"), str(base), name="shared-name")
    one, two = await asyncio.gather(first.prepare(request), second.prepare(request))
    assert one == two
    with pytest.raises(VolumeExists, match="pool 'p'"):
        await first.prepare(VolumeRequest(OwnerTag("q", "b"), str(base), name="shared-name"))


async def test_missing_qemu_img_names_the_package(tmp_path: Path, base: Path) -> None:
    qcow2 = Qcow2OverlayBackend(tmp_path / "state", qemu_img="/nonexistent/qemu-img")
    with pytest.raises(StorageUnavailable, match="apt-get install qemu-utils"):
        await qcow2.prepare(VolumeRequest(OwnerTag("p", "a"), str(base)))


async def test_failed_creation_leaves_nothing(tmp_path: Path, base: Path) -> None:
    async def failing(argv: object) -> ToolResult:
        partial = Path(list(argv)[-1])  # type: ignore[call-overload]
        partial.write_bytes(b"half")
        return ToolResult(("qemu-img", "create"), 1, "", "disk full")

    qcow2 = Qcow2OverlayBackend(tmp_path / "state", runner=failing)
    with pytest.raises(ToolFailed, match="disk full"):
        await qcow2.prepare(VolumeRequest(OwnerTag("p", "a"), str(base)))
    assert list((tmp_path / "state" / "qcow2").iterdir()) == []
