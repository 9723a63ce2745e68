"""Hosts deny by default, under qemu:///system as root (issue 11): a console log pointed at
root's authorized_keys and a base image at /etc/shadow are refused before anything exists.
No guest boots, so these are cheap."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_guests import GuestImage, virsh

LIB = '#include "ch/cern/openlab/smartdomains/components.sf"\n'
#: A direct-kernel guest with no disk: the VM is the only leaf.
BARE = LIB + 'sfConfig extends KvmDomain {{ kernel "{kernel}"; {extra} }}\n'
#: A disk first: the storage leaf is the one refused.
DISK = LIB + (
    "sfConfig extends Compound {{ sfSyncTerminate true;\n"
    '  disk extends Qcow2OverlayBackend {{ baseImage "{base}"; }}\n'
    '  vm extends KvmDomain {{ kernel "{kernel}"; storageBackend LAZY ATTRIB disk; }}\n'
    "}}\n"
)


@pytest.fixture
def state() -> Iterator[Path]:
    import shutil

    directory = Path("/var/lib/sdmesh/e2e") / uuid.uuid4().hex[:12]
    directory.mkdir(parents=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run(
    descriptor: Path, state: Path, name: str, image: GuestImage
) -> subprocess.CompletedProcess[str]:
    """``sdmesh run`` as root, lending the guest image's directories (not a default)."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "sdmesh", "run", "--hypervisor", "qemu:///system"),
            *(f"--allow-image-dir={directory}" for directory in image.allowed_dirs),
            *("--state-dir", str(state), "--name", name, str(descriptor)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SDMESH_VIRT_TYPE": os.environ.get("SDMESH_VIRT_TYPE", "qemu")},
    )


def nothing_created(state: Path, name: str) -> None:
    assert not [d for d in virsh("list", "--all", "--name").stdout.split() if name in d]
    volumes = state / "volumes"
    made = [p for p in volumes.rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert made == []
    assert not (volumes / "console").exists()


def test_a_console_log_at_roots_authorized_keys_is_refused(
    guest_image: GuestImage, state: Path, tmp_path: Path
) -> None:
    keys = Path("/root/.ssh/authorized_keys")
    before = keys.read_bytes() if keys.exists() else None
    descriptor = tmp_path / "console.sf"
    descriptor.write_text(
        BARE.format(kernel=guest_image.boot_kernel, extra=f'consoleLog "{keys}";')
    )
    done = run(descriptor, state, "e2econsole", guest_image)
    assert done.returncode == 1, done.stderr
    assert f"consoleLog {keys} is outside the console directory" in done.stderr
    nothing_created(state, "e2econsole")
    assert (keys.read_bytes() if keys.exists() else None) == before


def test_a_base_image_at_etc_shadow_is_refused(
    guest_image: GuestImage, state: Path, tmp_path: Path
) -> None:
    descriptor = tmp_path / "shadow.sf"
    descriptor.write_text(DISK.format(base="/etc/shadow", kernel=guest_image.boot_kernel))
    done = run(descriptor, state, "e2eshadow", guest_image)
    assert done.returncode == 1, done.stderr
    assert "baseImage /etc/shadow is outside allowed-image-dirs" in done.stderr
    nothing_created(state, "e2eshadow")
