"""Ownership tags written on everything a backend creates.

A tag is a small JSON record (pool, component path, generation, backend, creation time, ...)
so a volume can be rebuilt from the host alone. Files carry it in the ``user.sdmesh.owner``
extended attribute, which follows the file through renames; on file systems without user
xattrs it goes into a ``<file>.sdmesh.json`` sidecar. Logical volumes carry it base32-encoded
in an LV tag (LVM allows only ``[A-Za-z0-9_+.-/=!:&#]`` in tags).
"""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path
from typing import Any

from sdmesh.safeio import write_private
from sdmesh.storage.model import OwnerTag, Volume

TAG_XATTR = "user.sdmesh.owner"
SIDECAR_SUFFIX = ".sdmesh.json"
LV_MARKER_TAG = "sdmesh"
LV_OWNER_TAG_PREFIX = "sdmesh_owner_"
_RECORD_VERSION = 1
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENOSYS}


def encode_record(volume: Volume) -> bytes:
    """The tag of a volume: everything but its location, which the host already knows."""
    record: dict[str, Any] = {
        "v": _RECORD_VERSION,
        "pool": volume.owner.pool,
        "path": volume.owner.path,
        "generation": volume.owner.generation,
        "node": volume.owner.node,
        "backend": volume.backend,
        "created_at": volume.created_at,
        "format": volume.format,
        "kind": volume.kind,
        "base_image": volume.base_image,
        "has_backing_file": volume.has_backing_file,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def decode_record(data: bytes, path: Path, *, partial: bool = False) -> Volume | None:
    """Rebuild a volume from its tag; None for a malformed or foreign record."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("v") != _RECORD_VERSION:
            return None
        fmt = record["format"]
        kind = record["kind"]
        if fmt not in ("qcow2", "raw") or kind not in ("file", "block"):
            return None
        node = record.get("node")
        base = record.get("base_image")
        return Volume(
            path=path,
            format=fmt,
            kind=kind,
            backend=str(record["backend"]),
            owner=OwnerTag(
                pool=str(record["pool"]),
                path=str(record["path"]),
                generation=int(record["generation"]),
                node=None if node is None else str(node),
            ),
            created_at=float(record["created_at"]),
            base_image=None if base is None else str(base),
            has_backing_file=bool(record.get("has_backing_file", False)),
            partial=partial,
        )
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- files


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    return path.name.endswith(SIDECAR_SUFFIX)


def write_file_tag(path: Path, data: bytes) -> None:
    """Tag a file: an xattr when the file system has them, a sidecar otherwise."""
    try:
        os.setxattr(path, TAG_XATTR, data)
        return
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
    write_private(sidecar_of(path), data)  # a unique temporary name, never a planted one


def read_file_tag(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, TAG_XATTR)
    except OSError as exc:
        if exc.errno not in _NO_XATTR and exc.errno != errno.ENODATA:
            raise
    try:
        return sidecar_of(path).read_bytes()
    except FileNotFoundError:
        return None


def move_file_tag(src: Path, dst: Path) -> None:
    """Carry a sidecar along when its file is renamed (xattrs move by themselves)."""
    sidecar = sidecar_of(src)
    if sidecar.exists():
        os.replace(sidecar, sidecar_of(dst))


def remove_file_and_tag(path: Path) -> bool:
    """Remove a file and its sidecar; False when the file was already gone."""
    existed = True
    try:
        path.unlink()
    except FileNotFoundError:
        existed = False
    sidecar_of(path).unlink(missing_ok=True)
    return existed


# --------------------------------------------------------------------------- logical volumes


def lv_tags(volume: Volume) -> list[str]:
    """LV tags for a volume: a marker to select ours, and the base32 record."""
    encoded = base64.b32encode(encode_record(volume)).decode().rstrip("=")
    return [LV_MARKER_TAG, LV_OWNER_TAG_PREFIX + encoded]


def volume_from_lv_tags(tags: list[str], device: Path) -> Volume | None:
    for tag in tags:
        if tag.startswith(LV_OWNER_TAG_PREFIX):
            encoded = tag[len(LV_OWNER_TAG_PREFIX) :]
            padded = encoded + "=" * (-len(encoded) % 8)
            try:
                data = base64.b32decode(padded)
            except ValueError:
                return None
            return decode_record(data, device)
    return None
