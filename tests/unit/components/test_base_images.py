"""Base images a host lends (review of issue 11): only files that stand alone, of the format
declared, that nobody but root (or the agent) can change. A qcow2 base naming a backing file
would make QEMU open a host path no allow-list saw (another guest's disk, /etc/shadow)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sdmesh.components.policy import HostPolicy, PolicyRefused
from sdmesh.storage.images import base_header_problem

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def qcow2_header(backing_offset: int = 0, version: int = 3, incompatible: int = 0) -> bytes:
    """A qcow2 header as the format's specification lays it out (big-endian fields)."""
    head = b"QFI\xfb" + version.to_bytes(4, "big") + backing_offset.to_bytes(8, "big")
    head += (len(b"/etc/shadow") if backing_offset else 0).to_bytes(4, "big")
    head += (16).to_bytes(4, "big") + (1 << 20).to_bytes(8, "big")  # cluster bits, size
    head += bytes(72 - len(head))
    return head + incompatible.to_bytes(8, "big") + bytes(32)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    directory = tmp_path / "images"
    directory.mkdir()
    return directory


def policy_for(images: Path) -> HostPolicy:
    return HostPolicy(image_dirs=(images,))


def test_a_standalone_raw_or_qcow2_base_is_lent(images: Path) -> None:
    raw = images / "base.img"
    raw.write_bytes(b"\1" * 4096)
    assert policy_for(images).base_image(str(raw)) == raw
    assert policy_for(images).base_image(str(raw), "raw") == raw
    qcow2 = images / "base.qcow2"
    qcow2.write_bytes(qcow2_header())
    assert policy_for(images).base_image(str(qcow2), "qcow2") == qcow2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (qcow2_header(backing_offset=512), "is a qcow2 image with a backing file"),
        (qcow2_header(backing_offset=512, version=2), "is a qcow2 image with a backing file"),
        (qcow2_header(incompatible=1 << 2), "with an external data file"),
        (b"KDMV" + bytes(100), "is a vmdk image"),
    ],
)
def test_a_base_that_does_not_stand_alone_is_refused(
    images: Path, header: bytes, expected: str
) -> None:
    base = images / "base.qcow2"
    base.write_bytes(header)
    with pytest.raises(PolicyRefused, match=expected) as refused:
        policy_for(images).base_image(str(base))
    assert str(refused.value).startswith(f"base image {base} ")


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_a_real_qcow2_overlay_of_a_host_file_is_refused(images: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.img"  # outside the allowed directory
    secret.write_bytes(b"\0" * 65536)
    base = images / "innocent.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(base)]
    subprocess.run(argv, check=True)
    with pytest.raises(PolicyRefused, match="with a backing file"):
        policy_for(images).base_image(str(base), "qcow2")


def test_a_declared_raw_base_must_be_raw(images: Path) -> None:
    base = images / "base.img"
    base.write_bytes(qcow2_header())
    with pytest.raises(PolicyRefused, match="declared baseFormat raw but its content is qcow2"):
        policy_for(images).base_image(str(base), "raw")
    assert base_header_problem(b"\0" * 64, "qcow2", "b") is not None  # and the other way


def test_a_base_others_can_write_is_refused(images: Path) -> None:
    base = images / "base.img"
    base.write_bytes(b"\1" * 512)
    base.chmod(0o664)
    with pytest.raises(PolicyRefused, match=r"writable by its group or by others \(mode 0664\)"):
        policy_for(images).base_image(str(base))
    base.chmod(0o644)
    images.chmod(0o777)
    with pytest.raises(PolicyRefused, match=f"its parent {images} is writable"):
        policy_for(images).base_image(str(base))


@root_only
def test_a_base_someone_else_owns_or_could_swap_is_refused(images: Path) -> None:
    base = images / "base.img"
    base.write_bytes(b"\1" * 512)
    os.chown(base, NOBODY, NOBODY)
    with pytest.raises(PolicyRefused, match=f"is owned by uid {NOBODY}; bases must be owned"):
        policy_for(images).base_image(str(base))
    os.chown(base, 0, 0)
    os.chown(images, NOBODY, NOBODY)  # its owner could rename it and put another in place
    with pytest.raises(PolicyRefused, match=f"its parent {images} is owned by uid {NOBODY}"):
        policy_for(images).base_image(str(base))


def test_an_unconfined_run_checks_nothing_more(images: Path) -> None:
    """sdmesh run as an ordinary user: QEMU opens files with that user's own rights."""
    base = images / "base.qcow2"
    base.write_bytes(qcow2_header(backing_offset=512))
    assert HostPolicy(confined=False).base_image(str(base)) == base
