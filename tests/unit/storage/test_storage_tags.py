"""Ownership tags: records, xattrs with sidecar fallback, LV tags."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from sdmesh.storage import tags
from sdmesh.storage.model import OwnerTag, Volume

VOLUME = Volume(
    path=Path("/v/x.qcow2"),
    format="qcow2",
    kind="file",
    backend="qcow2",
    owner=OwnerTag("pool <1>", "sfConfig:pool:dom 1", 4, "node-a"),
    created_at=1700000000.5,
    base_image="/images/base.img",
    has_backing_file=True,
)


def test_record_round_trip() -> None:
    data = tags.encode_record(VOLUME)
    assert tags.decode_record(data, VOLUME.path) == VOLUME
    assert tags.decode_record(data, VOLUME.path, partial=True).partial  # type: ignore[union-attr]
    for garbage in (b"", b"[]", b'{"v": 2}', b'{"v": 1, "pool": "p"}', b"\xff"):
        assert tags.decode_record(garbage, VOLUME.path) is None


def test_xattr_tag_follows_rename(tmp_path: Path) -> None:
    path = tmp_path / "a.img"
    path.write_bytes(b"x")
    tags.write_file_tag(path, b"tag")
    assert os.getxattr(path, tags.TAG_XATTR) == b"tag"
    moved = tmp_path / "b.img"
    tags.move_file_tag(path, moved)
    os.rename(path, moved)
    assert tags.read_file_tag(moved) == b"tag"
    assert tags.remove_file_and_tag(moved) and not tags.remove_file_and_tag(moved)


def test_sidecar_when_the_file_system_has_no_user_xattrs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_xattr(*_args: object) -> None:
        raise OSError(errno.ENOTSUP, "not supported")

    monkeypatch.setattr(os, "setxattr", no_xattr)
    monkeypatch.setattr(os, "getxattr", no_xattr)
    path = tmp_path / "a.img"
    path.write_bytes(b"x")
    tags.write_file_tag(path, b"tag")
    assert tags.sidecar_of(path).read_bytes() == b"tag"
    assert tags.is_sidecar(tags.sidecar_of(path))
    moved = tmp_path / "b.img"
    tags.move_file_tag(path, moved)
    os.rename(path, moved)
    assert tags.read_file_tag(moved) == b"tag"
    tags.remove_file_and_tag(moved)
    assert list(tmp_path.iterdir()) == []


def test_untagged_file(tmp_path: Path) -> None:
    path = tmp_path / "a.img"
    path.write_bytes(b"x")
    assert tags.read_file_tag(path) is None


def test_lv_tags_use_only_characters_lvm_allows() -> None:
    lv_tags = tags.lv_tags(VOLUME)
    assert lv_tags[0] == tags.LV_MARKER_TAG
    for tag in lv_tags:
        assert re.fullmatch(r"[A-Za-z0-9_+.\-/=!:&#]{1,1024}", tag)
    block = Path("/dev/vg0/x")
    decoded = tags.volume_from_lv_tags(["other", *lv_tags], block)
    assert decoded is not None and decoded.owner == VOLUME.owner and decoded.path == block
    assert tags.volume_from_lv_tags(["sdmesh"], block) is None
    assert tags.volume_from_lv_tags(["sdmesh_owner_!!"], block) is None
