"""Storage backends: guest disks made from base images, tagged so nothing is ever orphaned.

Use :func:`backend_named` to pick a backend from a descriptor's storage component name.
"""

from __future__ import annotations

from pathlib import Path

from sdmesh.storage.defaults import DEFAULT_STATE_DIR
from sdmesh.storage.errors import (
    BaseImageNotFound,
    StorageError,
    StorageUnavailable,
    ToolFailed,
    VolumeBusy,
    VolumeExists,
)
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.loopback import LoopbackStorageBackend
from sdmesh.storage.lvm import LVMStorageBackend
from sdmesh.storage.model import (
    OwnerTag,
    StorageBackend,
    Volume,
    VolumeKeeper,
    VolumeRequest,
    parse_size,
)
from sdmesh.storage.qcow2 import Qcow2OverlayBackend

__all__ = [
    "DEFAULT_STATE_DIR",
    "BaseImageNotFound",
    "HostLocks",
    "LVMStorageBackend",
    "LoopbackStorageBackend",
    "OwnerTag",
    "Qcow2OverlayBackend",
    "StorageBackend",
    "StorageError",
    "StorageUnavailable",
    "ToolFailed",
    "Volume",
    "VolumeBusy",
    "VolumeExists",
    "VolumeKeeper",
    "VolumeRequest",
    "backend_named",
    "parse_size",
]

_BACKENDS: dict[str, type[Qcow2OverlayBackend | LoopbackStorageBackend | LVMStorageBackend]] = {
    "Qcow2OverlayBackend": Qcow2OverlayBackend,
    "LoopbackStorageBackend": LoopbackStorageBackend,
    "LVMStorageBackend": LVMStorageBackend,
}


def backend_named(
    component: str, state_dir: Path = DEFAULT_STATE_DIR, *, lock_dir: Path | None = None
) -> StorageBackend:
    """The backend for a descriptor component name (``LoopbackStorageBackend``, ...)."""
    try:
        cls = _BACKENDS[component]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise StorageError(f"unknown storage backend {component!r}; known: {known}") from None
    return cls(state_dir, lock_dir=lock_dir)
