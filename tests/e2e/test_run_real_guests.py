"""`sdmesh run` boots real guests under qemu:///system from a tutorial-shaped descriptor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_guests import GuestImage, console_identity, virsh, wait_for_marker

POOLS = Path(__file__).parent / "pools"
VMS = [f"sfConfig:pool:smartDomain{i}:domain" for i in (1, 2, 3)]


def start(image: GuestImage, state: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdmesh",
            "run",
            "--json",
            "--hypervisor",
            "qemu:///system",
            "--state-dir",
            str(state),
            "--name",
            name,
            "-D",
            f"guest.kernel={image.boot_kernel}",
            "-D",
            f"guest.initrd={image.initrd}",
            "-D",
            f"guest.base={image.base}",
            *(f"--allow-image-dir={directory}" for directory in image.allowed_dirs),
            str(POOLS / "threeGuests.sf"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SDMESH_VIRT_TYPE": os.environ.get("SDMESH_VIRT_TYPE", "qemu")},
    )


def wait_running(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, str]:
    """component path -> domain name, once every VM runs."""
    assert process.stdout is not None
    domains: dict[str, str] = {}
    running: set[str] = set()
    deadline = time.monotonic() + timeout
    while running != set(VMS) and time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, f"sdmesh run ended early: {process.stderr.read() if process.stderr else ''}"
        event = json.loads(line)
        if event["state"] == "running" and event["path"] in VMS:
            running.add(event["path"])
    assert running == set(VMS)
    for path in VMS:
        listed = virsh("list", "--name").stdout.split()
        domains[path] = next(d for d in listed if d.startswith("sdm-") and path.split(":")[2] in d)
    return domains


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """State under /var/lib/sdmesh: QEMU (libvirt-qemu) cannot enter pytest's 0700 tmp dirs."""
    import shutil
    import uuid

    directory = Path("/var/lib/sdmesh/e2e") / uuid.uuid4().hex[:12]
    directory.mkdir(parents=True)
    for parent in (directory, *directory.parents[:2]):
        parent.chmod(parent.stat().st_mode | 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_private_state_dir_is_refused_before_anything_is_created(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    process = start(guest_image, tmp_path, "e2eprivate")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "is not searchable by other users" in err and "--state-dir" in err
    nothing_left(tmp_path, "e2eprivate")


def nothing_left(state: Path, pool: str) -> None:
    assert not [d for d in virsh("list", "--all", "--name").stdout.split() if pool in d]
    assert (
        not list((state / "volumes" / "qcow2").glob("*"))
        if (state / "volumes" / "qcow2").exists()
        else True
    )


def test_three_guests_show_their_identity_and_leave_nothing(
    guest_image: GuestImage, state: Path
) -> None:
    tmp_path = state
    process = start(guest_image, tmp_path, "e2ethree")
    try:
        domains = wait_running(process)
        for index, path in enumerate(VMS, start=1):
            log = tmp_path / "volumes" / "console" / "e2ethree" / f"{domains[path]}.log"
            wait_for_marker(log)
            identity = console_identity(log.read_text(errors="replace"))
            assert identity["hostname"] == f"machine9-dom{index}"
            assert identity["ip"] == f"10.0.9.{index}"
            assert "base=SDMESH-BASE-IMAGE-v1" in log.read_text(errors="replace"), (
                "overlay reads its base"
            )
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    assert process.returncode == 0
    nothing_left(tmp_path, "e2ethree")
    assert not list((tmp_path / "volumes" / "console").rglob("*.log")), "logs go with their VMs"


def test_a_guest_destroyed_outside_fails_the_pool_and_everything_goes(
    guest_image: GuestImage, state: Path
) -> None:
    tmp_path = state
    process = start(guest_image, tmp_path, "e2ekill")
    try:
        domains = wait_running(process)
        virsh("destroy", domains[VMS[1]])
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "was stopped outside sdmesh" in err and VMS[1] in err
    nothing_left(tmp_path, "e2ekill")
    kept = list((tmp_path / "volumes" / "console" / "e2ekill").glob("*.log"))
    assert [p.name for p in kept] == [f"{domains[VMS[1]]}.log"], "only the failed VM's log stays"
