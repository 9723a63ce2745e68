"""Private files written safely: unique temporary names, no symlink following, 0600.

The agent runs as root in directories an operator may have misconfigured; a write that
follows a planted symlink, or a fixed ``.tmp`` name someone else pre-created, turns it into a
way to overwrite any file on the host. Every file the agent keeps (keys, tokens, records,
descriptors, seeds) goes through ``write_private``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``data``, readable by the owner only.

    The temporary file is created with O_EXCL under a random name in the same directory, so
    nothing planted in advance is opened; ``os.replace`` swaps the name itself and never
    follows a symlink at ``path``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_private(path: Path) -> bytes | None:
    """The file's bytes, refusing to follow a symlink; None when missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


#: Directories created on the way to a private one: others may pass through, not list.
PARENT_DIR_MODE = 0o711


class UnsafeDirectory(Exception):
    """A directory the agent would keep private files in is not safe to write into."""


def check_owned_dir(path: Path, *, uid: int | None = None, what: str = "state directory") -> None:
    """Refuse ``path`` unless it is a real directory (not a symlink) owned by ``uid`` (the
    process's own by default) and writable by nobody else.

    In a directory another user owns or may write, any name the agent creates can be planted
    in advance (a symlink, a hard link, a file it keeps open), so nothing written there is
    private. The check is on the directory itself; its parents are the operator's choice.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeDirectory(f"{what} {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(
            f"{what} {path} is a symbolic link; give its real path (realpath {path})"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{what} {path} is not a directory")
    if info.st_uid != uid:
        raise UnsafeDirectory(
            f"{what} {path} is owned by uid {info.st_uid}, not by this agent (uid {uid}): "
            f"anyone who owns it can plant links in it (chown {uid} {path}, or choose another)"
        )
    if info.st_mode & 0o022:
        raise UnsafeDirectory(
            f"{what} {path} is writable by its group or by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run chmod go-w {path}"
        )


def ensure_private_dir(path: Path, mode: int = 0o700, *, what: str = "directory") -> Path:
    """Create ``path`` (and missing parents, 0711) or check the existing one: either
    way it ends as a directory of ours, writable by us alone, with at most ``mode``.

    ``mode`` is 0700 for what only the agent reads (keys, descriptors, console logs) and
    0711 for directories QEMU, running as another user, must traverse to open a disk it was
    given (it cannot list them). An existing directory keeps its mode if that is already
    stricter; one that is looser is tightened.
    """
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        # Missing parents: 0711, so a 0711 directory made later below them stays reachable
        # (QEMU must traverse every level above a disk); only ``path`` itself gets ``mode``.
        wanted = mode if directory == path else PARENT_DIR_MODE
        try:
            os.mkdir(directory, wanted)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked below like any existing one
        restrict_mode(directory, wanted)  # exactly: the umask may have taken o+x
    check_owned_dir(path, what=what)
    current_mode = stat.S_IMODE(os.lstat(path).st_mode)
    if current_mode & ~mode:
        restrict_mode(path, current_mode & mode)
    return path


def create_private(path: Path, mode: int = 0o600) -> int:
    """Open a new file at ``path`` for writing: O_EXCL (a planted file or link is refused,
    never reused or followed), owner-only from the first byte. Returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def write_new_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a file that must not exist yet (see :func:`create_private`)."""
    fd = create_private(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def restrict_mode(path: Path, mode: int) -> None:
    """chmod ``path`` without following a symlink there (os.chmod cannot on Linux)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
