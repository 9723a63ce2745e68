"""Plain values shared by every storage backend, and the protocol they implement."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

VolumeFormat = Literal["qcow2", "raw"]
VolumeKind = Literal["file", "block"]

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,119}$")
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str) -> int:
    """Bytes in a disk size as descriptors write it (``"10G"``, ``"512M"``, ``"1T"``, plain
    bytes), in binary units as qemu-img and lvcreate read them. ``ValueError`` for anything
    else, or zero."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(
            f"size {text!r} is not a whole number of bytes with an optional K, M, G, T or P "
            'suffix (e.g. "10G")'
        )
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if size <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return size


@dataclass(frozen=True)
class OwnerTag:
    """Who a volume belongs to; written on the volume so a reaper can find leftovers."""

    pool: str
    path: str
    generation: int = 0
    node: str | None = None


@dataclass(frozen=True)
class VolumeRequest:
    """Ask a backend for one guest disk made from a base image."""

    owner: OwnerTag
    base_image: str
    name: str | None = None
    size_bytes: int | None = None
    base_format: VolumeFormat | None = None

    def volume_name(self) -> str:
        """The requested name, or one derived from the owner (readable and collision-free)."""
        if self.name is not None:
            if not _VOLUME_NAME.fullmatch(self.name):
                raise ValueError(
                    f"volume name {self.name!r} must be 1-120 characters of letters, digits "
                    "and _.+- and must not start with '.', '+' or '-'"
                )
            return self.name
        digest = hashlib.sha256(f"{self.owner.pool}\0{self.owner.path}".encode()).hexdigest()[:10]
        pool = _SLUG.sub("-", self.owner.pool).strip("-.")[:32] or "pool"
        path = _SLUG.sub("-", self.owner.path).strip("-.")[:48] or "root"
        return f"{pool}-{path}-{digest}"


@dataclass(frozen=True)
class Volume:
    """A disk a backend created; ``path`` is a file or a block device."""

    path: Path
    format: VolumeFormat
    kind: VolumeKind
    backend: str
    owner: OwnerTag
    created_at: float
    base_image: str | None = None
    has_backing_file: bool = False
    partial: bool = False


@runtime_checkable
class VolumeKeeper(Protocol):
    """Anything that creates tagged volumes: can list and remove them (what a reaper needs)."""

    name: str

    async def release(self, volume: Volume) -> bool:
        """Remove the volume and its tags; False when it was already gone."""
        ...

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        """Volumes tagged by sdmesh, for one pool or for all."""
        ...


@runtime_checkable
class StorageBackend(VolumeKeeper, Protocol):
    """Creates guest disks from base images and removes them again, leaving nothing behind."""

    async def check(self, request: VolumeRequest) -> None:
        """Raise a StorageError if ``prepare(request)`` cannot work here; creates nothing."""
        ...

    async def prepare(self, request: VolumeRequest) -> Volume:
        """Create (or return the already-owned) volume for the request's owner."""
        ...
