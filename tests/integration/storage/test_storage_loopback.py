"""LoopbackStorageBackend: sparse private copies of a base image."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from storage_support import MIB, allocated_bytes, make_sparse_base

from sdmesh.storage import (
    BaseImageNotFound,
    LoopbackStorageBackend,
    OwnerTag,
    StorageError,
    VolumeRequest,
)
from sdmesh.storage.files import PARTIAL_MARKER
from sdmesh.storage.tags import TAG_XATTR


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_sparse_base(tmp_path / "slc3-smartfrog.img")


async def test_copy_is_sparse_identical_tagged_and_released(tmp_path: Path, base: Path) -> None:
    loop = LoopbackStorageBackend(tmp_path / "state")
    volume = await loop.prepare(VolumeRequest(OwnerTag("pool-1", "sfConfig:loop", 1), str(base)))
    assert volume.format == "raw" and volume.path.suffix == ".img" and not volume.has_backing_file
    assert volume.path.read_bytes() == base.read_bytes()
    assert os.path.getsize(volume.path) == 64 * MIB
    assert allocated_bytes(volume.path) < 2 * MIB  # 64 MiB apparent, ~1 MiB real
    assert b'"pool":"pool-1"' in os.getxattr(volume.path, TAG_XATTR)
    assert await loop.list_owned("pool-1") == [volume]
    assert await loop.release(volume)
    assert await loop.list_owned() == [] and base.exists()


async def test_copies_are_independent_of_the_base(tmp_path: Path, base: Path) -> None:
    loop = LoopbackStorageBackend(tmp_path / "state")
    volume = await loop.prepare(VolumeRequest(OwnerTag("p", "a"), str(base), size_bytes=128 * MIB))
    with open(base, "r+b") as image:
        image.write(b"changed")
    assert volume.path.read_bytes()[:11] == b"boot sector"
    assert os.path.getsize(volume.path) == 128 * MIB


async def test_concurrent_copies(tmp_path: Path, base: Path) -> None:
    loop = LoopbackStorageBackend(tmp_path / "state")
    volumes = await asyncio.gather(
        *(loop.prepare(VolumeRequest(OwnerTag("p", f"vm{i}"), str(base))) for i in range(20))
    )
    assert len({v.path for v in volumes}) == 20
    assert all(v.path.read_bytes() == base.read_bytes() for v in volumes[:3])


async def test_refusals(tmp_path: Path, base: Path) -> None:
    loop = LoopbackStorageBackend(tmp_path / "state")
    with pytest.raises(BaseImageNotFound):
        await loop.prepare(VolumeRequest(OwnerTag("p", "a"), str(tmp_path / "missing.img")))
    with pytest.raises(StorageError, match="smaller"):
        await loop.prepare(VolumeRequest(OwnerTag("p", "a"), str(base), size_bytes=MIB))
    qcow = tmp_path / "b.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(512))
    with pytest.raises(StorageError, match="only grow raw"):
        await loop.prepare(VolumeRequest(OwnerTag("p", "a"), str(qcow), size_bytes=10 * MIB))
    outsider = (await loop.prepare(VolumeRequest(OwnerTag("p", "b"), str(base)))).__class__
    with pytest.raises(StorageError, match="outside"):
        await loop.release(outsider(base, "raw", "file", "loopback", OwnerTag("p", "b"), 0.0))
    assert base.exists()


async def test_a_crash_midway_leaves_a_partial_file_that_is_reported(tmp_path: Path) -> None:
    loop = LoopbackStorageBackend(tmp_path / "state")
    directory = tmp_path / "state" / "loopback"
    directory.mkdir(parents=True)
    leftover = directory / f".p-a-0123456789.img{PARTIAL_MARKER}dead"
    leftover.write_bytes(b"half a copy")
    [found] = await loop.list_owned()
    assert found.partial and found.path == leftover
    assert await loop.release(found) and not leftover.exists()
