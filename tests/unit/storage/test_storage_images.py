"""Base image format sniffing and the in-process sparse copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmesh.storage.errors import BaseImageNotFound, StorageError
from sdmesh.storage.images import data_extents, require_base_file, sniff_format, sparse_copy

MIB = 1024 * 1024


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_sniff(tmp_path: Path) -> None:
    qcow = tmp_path / "a.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(100))
    raw = tmp_path / "a.img"
    raw.write_bytes(bytes(100))
    vmdk = tmp_path / "a.vmdk"
    vmdk.write_bytes(b"KDMV" + bytes(100))
    assert sniff_format(qcow) == "qcow2" and sniff_format(raw) == "raw"
    with pytest.raises(StorageError, match="qemu-img convert"):
        sniff_format(vmdk)


def test_require_base_file(tmp_path: Path) -> None:
    with pytest.raises(BaseImageNotFound, match="absolute"):
        require_base_file("base.img")
    with pytest.raises(BaseImageNotFound, match="does not exist"):
        require_base_file(str(tmp_path / "missing.img"))


def test_sparse_copy_keeps_holes_and_skips_zero_blocks(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    with open(base, "wb") as f:
        f.truncate(64 * MIB)
        f.seek(1 * MIB)
        f.write(b"A" * MIB)
        f.seek(40 * MIB)
        f.write(bytes(4 * MIB))  # allocated zeros: must not be copied as data
        f.seek(60 * MIB)
        f.write(b"tail")
    copy = tmp_path / "copy.img"
    sparse_copy(base, copy)
    assert copy.read_bytes() == base.read_bytes()
    assert os.path.getsize(copy) == 64 * MIB
    assert allocated(copy) < 2 * MIB  # only the data, not 64 MiB nor the zero run
    assert allocated(copy) < allocated(base)


def test_sparse_copy_can_grow_but_not_shrink(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"x" * 4096)
    grown = tmp_path / "grown.img"
    sparse_copy(base, grown, 10 * MIB)
    assert os.path.getsize(grown) == 10 * MIB and grown.read_bytes()[:4096] == b"x" * 4096
    with pytest.raises(StorageError):
        sparse_copy(base, tmp_path / "small.img", 100)


def test_data_extents_of_an_empty_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "hole.img"
    with open(path, "wb") as f:
        f.truncate(8 * MIB)
    with open(path, "rb") as f:
        assert list(data_extents(f.fileno(), 8 * MIB)) == []
