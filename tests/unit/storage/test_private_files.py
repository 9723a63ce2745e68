"""Files and directories the agent keeps (issue 11 item 6): 0600 files in 0700/0711
directories of its own, unique temporary names, no symlink ever followed, and a state
directory someone else owns refused."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.hypervisor.nocloud import NoCloudSeedStore
from sdmesh.safeio import (
    UnsafeDirectory,
    check_owned_dir,
    create_private,
    ensure_private_dir,
    write_private,
)
from sdmesh.storage import LoopbackStorageBackend, OwnerTag, Qcow2OverlayBackend, VolumeRequest
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.simulated import SimulatedStorageBackend
from sdmesh.storage.tags import write_file_tag

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file a planted link points at: it must never change."""
    target = tmp_path / "victim"
    target.write_bytes(b"root's file\n")
    return target


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- safeio


def test_write_private_replaces_a_planted_link_instead_of_following_it(
    tmp_path: Path, victim: Path
) -> None:
    target = tmp_path / "token"
    target.symlink_to(victim)
    (tmp_path / ".token.tmp").symlink_to(victim)  # the old fixed temporary name
    write_private(target, b"secret")
    assert victim.read_bytes() == b"root's file\n"
    assert not target.is_symlink() and target.read_bytes() == b"secret"
    assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".token.tmp", "token", "victim"]


@pytest.mark.parametrize("planted", ["link", "file"])
def test_create_private_refuses_anything_already_at_the_name(
    tmp_path: Path, victim: Path, planted: str
) -> None:
    target = tmp_path / "new"
    if planted == "link":
        target.symlink_to(victim)
    else:
        target.write_bytes(b"")
    with pytest.raises(FileExistsError):
        create_private(target)
    assert victim.read_bytes() == b"root's file\n"


@pytest.mark.parametrize("wanted", [0o700, 0o711])
def test_private_dirs_get_exactly_their_mode_whatever_the_umask(
    tmp_path: Path, umask_077: None, wanted: int
) -> None:
    made = ensure_private_dir(tmp_path / "a" / "b", wanted)
    assert mode(made) == wanted
    assert mode(made.parent) == 0o711  # a disk directory made below it later stays reachable


def test_an_existing_loose_dir_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "state"
    loose.mkdir()
    loose.chmod(0o755)
    ensure_private_dir(loose, 0o711)
    assert mode(loose) == 0o711


@root_only
def test_a_state_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(UnsafeDirectory) as refused:
        ensure_private_dir(state, 0o711, what="state directory")
    assert str(refused.value).startswith(
        f"state directory {state} is owned by uid {NOBODY}, not by this agent (uid 0)"
    )
    assert list(state.iterdir()) == []


def test_a_group_writable_or_linked_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o770)
    with pytest.raises(UnsafeDirectory, match=r"writable by its group or by others \(mode 0770\)"):
        check_owned_dir(state)
    link = tmp_path / "link"
    link.symlink_to(state)
    with pytest.raises(UnsafeDirectory, match="is a symbolic link"):
        ensure_private_dir(link)


@root_only
def test_a_state_dir_under_a_parent_someone_else_owns_is_refused(tmp_path: Path) -> None:
    """The owner of a parent could rename the checked directory away and put a link to a
    victim in its place between the check and the writes: refused, and nothing created."""
    evil = tmp_path / "evil"
    evil.mkdir()
    os.chown(evil, NOBODY, NOBODY)
    state = evil / "state"
    state.mkdir()  # root's own, 0755: on its own it would pass
    with pytest.raises(UnsafeDirectory) as refused:
        ensure_private_dir(state, 0o711, what="state directory")
    assert f"its parent {evil} is owned by uid {NOBODY}" in str(refused.value)
    with pytest.raises(UnsafeDirectory, match="is owned by uid 65534"):
        check_owned_dir(state)
    # Missing levels below it are not made either.
    with pytest.raises(UnsafeDirectory):
        ensure_private_dir(evil / "new" / "state", 0o711)
    assert sorted(p.name for p in evil.iterdir()) == ["state"]
    # Reached through a symlink that root owns in a safe place: the target's parents count.
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / "link").symlink_to(evil)
    with pytest.raises(UnsafeDirectory, match=f"its parent {evil} is owned by uid {NOBODY}"):
        ensure_private_dir(safe / "link" / "state", 0o711)


def test_a_writable_parent_is_refused_a_sticky_root_one_is_not(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeDirectory, match=r"writable by its group or by others \(mode 0777\)"):
        ensure_private_dir(shared / "state", 0o700)
    assert list(shared.iterdir()) == []
    if os.geteuid() == 0:  # like /tmp: others add names, cannot rename ours
        shared.chmod(0o1777)
        made = ensure_private_dir(shared / "a" / "state", 0o700)
        assert mode(made) == 0o700 and mode(made.parent) == 0o711


# -------------------------------------------------------------------- volumes and seeds


def request(pool: str = "web", path: str = "sfConfig:vm", base: str = "") -> VolumeRequest:
    return VolumeRequest(owner=OwnerTag(pool, path, 1), base_image=base)


async def test_disks_are_0600_in_a_0711_directory(tmp_path: Path, umask_077: None) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"\1" * 4096)
    volume = await LoopbackStorageBackend(tmp_path / "state").prepare(request(base=str(base)))
    assert mode(volume.path) == 0o600
    assert mode(volume.path.parent) == 0o711  # QEMU (another user) traverses, cannot list
    assert mode(tmp_path / "state" / "locks") == 0o700
    assert mode(tmp_path / "state") == 0o711  # made for the locks first: QEMU still passes


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
async def test_qcow2_overlays_are_0600_although_qemu_img_writes_them(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    volume = await Qcow2OverlayBackend(tmp_path / "state").prepare(request(base=str(base)))
    assert mode(volume.path) == 0o600


async def test_seeds_hold_user_data_and_are_0600(tmp_path: Path) -> None:
    store = NoCloudSeedStore(tmp_path / "state")
    documents = {"meta-data": b"{}", "user-data": b"#cloud-config\n", "network-config": b"{}"}
    volume = await store.write(OwnerTag("web", "sfConfig:vm", 1), documents)
    assert mode(volume.path) == 0o600 and mode(volume.path.parent) == 0o711


async def test_a_link_planted_at_a_volume_name_is_never_followed(
    tmp_path: Path, victim: Path
) -> None:
    backend = SimulatedStorageBackend(tmp_path / "state")
    wanted = request()
    final = backend.store.location(wanted, ".img")
    ensure_private_dir(final.parent, 0o711)
    final.symlink_to(victim)
    with pytest.raises(Exception, match="already exists"):
        await backend.prepare(wanted)
    assert victim.read_bytes() == b"root's file\n"


def test_a_tag_sidecar_never_follows_a_link_at_its_old_temporary_name(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    monkeypatch.setattr(os, "setxattr", _no_xattrs)  # a file system without xattrs
    (tmp_path / "disk.img.sdmesh.json.tmp").symlink_to(victim)
    write_file_tag(disk, b"{}")
    assert victim.read_bytes() == b"root's file\n"
    assert mode(tmp_path / "disk.img.sdmesh.json") == 0o600


def _no_xattrs(*args: object) -> None:
    import errno

    raise OSError(errno.ENOTSUP, "no xattrs")


async def test_a_lock_file_replaced_by_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    lock = HostLocks(tmp_path / "locks").volume("x")
    lock.path.symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        async with lock.exclusive():
            pass
    assert victim.read_bytes() == b"root's file\n"
