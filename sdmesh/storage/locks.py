"""Per-host locks on shared storage resources (base images, volume names).

Two layers: inside the process an asyncio readers-writer lock per key, so waiters queue
without blocking the event loop or tying up threads; between processes an ``flock`` on a
lock file in a host-wide directory. ``flock`` is taken with ``LOCK_NB`` and retried with a
short back-off, so a process waiting on another never blocks its event loop. Many overlays
may be created from one base image at once (shared); replacing or converting a base image
takes it exclusively, and so does creating a volume under a given name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from sdmesh.safeio import ensure_private_dir

_POLL_START_S = 0.002
_POLL_MAX_S = 0.1
_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


async def _flock(path: Path, operation: int) -> int:
    """Open ``path`` and take an flock on it without blocking the event loop."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    delay = _POLL_START_S
    try:
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
    except BaseException:
        os.close(fd)
        raise


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class KeyLock:
    """Readers-writer lock for one key, valid across tasks and processes of one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._gate = asyncio.Lock()  # serialises acquisitions; writers hold it throughout
        self._changed = asyncio.Event()
        self._readers = 0
        self._shared_fd: int | None = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._gate:
            if self._readers == 0:
                self._shared_fd = await _flock(self.path, fcntl.LOCK_SH)
            self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0 and self._shared_fd is not None:
                _unlock(self._shared_fd)
                self._shared_fd = None
            self._notify()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._gate:
            while self._readers:
                await self._changed.wait()
            fd = await _flock(self.path, fcntl.LOCK_EX)
            try:
                yield
            finally:
                _unlock(fd)


class HostLocks:
    """The lock directory of one host; hands out one :class:`KeyLock` per resource.

    Base images are few, so each has its own lock file. Volume names come and go by the
    thousand, and lock files cannot be deleted safely while others may open them, so
    volume names share a fixed set of striped lock files (a rare false conflict only
    serialises two short creations).
    """

    VOLUME_STRIPES = 64

    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self._locks: dict[Path, KeyLock] = {}

    def _lock_at(self, filename: str) -> KeyLock:
        path = self.lock_dir / filename
        lock = self._locks.get(path)
        if lock is None:
            ensure_private_dir(self.lock_dir, 0o700, what="lock directory")
            lock = self._locks[path] = KeyLock(path)
        return lock

    def base_image(self, base: str) -> KeyLock:
        """Shared while volumes are made from ``base``; exclusive to replace or convert it."""
        key = os.path.realpath(base) if base.startswith("/") else base
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        label = _LABEL.sub("_", Path(key).name)[:40]
        return self._lock_at(f"base-{label}-{digest}.lock")

    def volume(self, location: str) -> KeyLock:
        """Exclusive while a volume name is being created or removed."""
        stripe = int(hashlib.sha256(location.encode()).hexdigest(), 16) % self.VOLUME_STRIPES
        return self._lock_at(f"volume-{stripe:02d}.lock")
