"""LVMStorageBackend on a real, throw-away volume group on a loop device (root only)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.storage import LVMStorageBackend, OwnerTag, VolumeRequest
from sdmesh.storage.lvm import device_mapper_problem


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a loop device and a volume group"
    missing = [
        tool for tool in ("losetup", "pvcreate", "vgcreate", "lvcreate") if not shutil.which(tool)
    ]
    if missing:
        return f"LVM tools missing ({', '.join(missing)}): apt-get install lvm2"
    problem = device_mapper_problem()
    if problem is not None:
        return f"the kernel offers no device-mapper ({problem})"
    return None


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def volume_group(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as f:
        f.truncate(128 * 1024 * 1024)
    device = run("losetup", "--find", "--show", str(backing))
    vg = f"sdmeshtest{secrets.token_hex(3)}"
    try:
        run("pvcreate", "-qq", device)
        run("vgcreate", "-qq", vg, device)
        run("lvcreate", "-qq", "--yes", "--size", "16M", "--name", "base", vg)
        yield vg
    finally:
        subprocess.run(["vgremove", "-qq", "--force", vg], check=False)
        subprocess.run(["pvremove", "-qq", device], check=False)
        subprocess.run(["losetup", "--detach", device], check=False)


async def test_snapshot_lifecycle(tmp_path: Path, volume_group: str) -> None:
    lvm = LVMStorageBackend(tmp_path / "state", snapshot_size="8M")
    owner = OwnerTag("pool-lvm", "sfConfig:lvm", 1)
    volume = await lvm.prepare(VolumeRequest(owner, f"{volume_group}/base", name="dom1"))
    assert volume.path == Path(f"/dev/{volume_group}/dom1") and volume.path.exists()
    [listed] = await lvm.list_owned("pool-lvm")
    assert listed.owner == owner and listed.path == volume.path
    assert await lvm.release(volume) is True
    assert await lvm.list_owned("pool-lvm") == []
