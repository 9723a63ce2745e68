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
    process's own by default) and writable by nobody else, under parents nobody else can
    change.

    In a directory another user owns or may write, any name the agent creates can be planted
    in advance (a symlink, a hard link, a file it keeps open), so nothing written there is
    private. The same holds one level up: whoever owns or may write a parent can rename the
    checked directory away and put a link in its place after the check, so every parent up to
    ``/`` must be safe too (:func:`check_parents`).
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
    check_parents(path, uid=uid, what=what)


def check_parents(path: Path, *, uid: int | None = None, what: str = "state directory") -> None:
    """Refuse ``path`` unless every directory above it, up to ``/``, is owned by root or by
    ``uid`` (ours by default) and writable by nobody else, except a sticky directory root
    owns (as ``/tmp``: others may add names there, not rename ours). A parent reached
    through a symbolic link is checked where the link points as well as where it lies."""
    uid = os.geteuid() if uid is None else uid
    owners = {0, uid, os.geteuid()}
    absolute = Path(os.path.abspath(path))
    directories = list(absolute.parents)
    directories += [d for d in Path(os.path.realpath(absolute.parent)).parents]
    directories.append(Path(os.path.realpath(absolute.parent)))
    for directory in dict.fromkeys(directories):
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            raise UnsafeDirectory(f"{what} {path}: its parent {directory} does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            continue  # the link's own directory is checked; where it points is, too
        if info.st_uid not in owners:
            raise UnsafeDirectory(
                f"{what} {path}: its parent {directory} is owned by uid {info.st_uid}, who "
                f"could move {path} away and put a link in its place; choose a path whose "
                "parents root (or this agent) owns"
            )
        sticky_root = bool(info.st_mode & stat.S_ISVTX) and info.st_uid == 0
        if info.st_mode & 0o022 and not sticky_root:
            raise UnsafeDirectory(
                f"{what} {path}: its parent {directory} is writable by its group or by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod go-w {directory}"
            )


def ensure_private_dir(path: Path, mode: int = 0o700, *, what: str = "directory") -> Path:
    """Create ``path`` (and missing parents, 0711) or check the existing one: either
    way it ends as a directory of ours, writable by us alone, with at most ``mode``, under
    parents nobody else can change (:func:`check_owned_dir`).

    ``mode`` is 0700 for what only the agent reads (keys, descriptors, console logs) and
    0711 for directories QEMU, running as another user, must traverse to open a disk it was
    given (it cannot list them). An existing directory keeps its mode if that is already
    stricter; one that is looser is tightened. Missing levels are made only after the deepest
    existing one and its parents passed the check, one at a time, each checked before the
    next is made in it, so nothing is ever created where someone else could interfere.
    """
    missing = []
    current = Path(os.path.abspath(path))
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if missing:
        check_parents(missing[-1], what=what)  # the deepest existing level and all above
    for directory in reversed(missing):
        # Missing parents: 0711, so a 0711 directory made later below them stays reachable
        # (QEMU must traverse every level above a disk); only ``path`` itself gets ``mode``.
        wanted = mode if directory == missing[0] else PARENT_DIR_MODE
        try:
            os.mkdir(directory, wanted)
        except FileExistsError:
            pass  # made meanwhile (by root or us: its parent is safe): checked below
        else:
            restrict_mode(directory, wanted)  # exactly: the umask may have taken o+x
        check_owned_dir(directory, what=what)
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
