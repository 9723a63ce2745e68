"""Volume names derived from owners, and the backend registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.storage import (
    LoopbackStorageBackend,
    LVMStorageBackend,
    Qcow2OverlayBackend,
    StorageBackend,
    StorageError,
    backend_named,
)
from sdmesh.storage.model import OwnerTag, VolumeRequest


def test_derived_names_are_safe_stable_and_distinct() -> None:
    request = VolumeRequest(OwnerTag("pool/1", "sfConfig:pool:<vm 1>"), "/b.img")
    name = request.volume_name()
    assert name == VolumeRequest(OwnerTag("pool/1", "sfConfig:pool:<vm 1>"), "/x").volume_name()
    assert "/" not in name and "<" not in name and " " not in name and not name.startswith(".")
    assert name != VolumeRequest(OwnerTag("pool/1", "sfConfig:pool:<vm 2>"), "/b.img").volume_name()


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "x" * 121, "-dash"])
def test_explicit_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        VolumeRequest(OwnerTag("p", "a"), "/b", name=bad).volume_name()


def test_backend_named(tmp_path: Path) -> None:
    assert isinstance(backend_named("Qcow2OverlayBackend", tmp_path), Qcow2OverlayBackend)
    assert isinstance(backend_named("LoopbackStorageBackend", tmp_path), LoopbackStorageBackend)
    lvm = backend_named("LVMStorageBackend", tmp_path)
    assert isinstance(lvm, LVMStorageBackend) and isinstance(lvm, StorageBackend)
    with pytest.raises(StorageError, match="known"):
        backend_named("NfsBackend", tmp_path)
