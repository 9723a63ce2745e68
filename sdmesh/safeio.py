"""Private files written safely: unique temporary names, no symlink following, 0600.

The agent runs as root in directories an operator may have misconfigured; a write that
follows a planted symlink, or a fixed ``.tmp`` name someone else pre-created, turns it into a
way to overwrite any file on the host. Every file the agent keeps (keys, tokens, records,
descriptors, seeds) goes through ``write_private``.
"""

from __future__ import annotations

import contextlib
import os
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
