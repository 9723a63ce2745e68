"""``sdmesh run``: one pool on one hypervisor, in the foreground, with nothing left behind.

A run holds an exclusive lock on ``<state>/runs/<pool>.lock`` while it lives. A run that
crashed leaves its lock file unheld; the next run on the host removes everything tagged with
such a pool before it starts (domains first, then volumes). Pools of live runs, and pools the
mesh agent manages, are never touched: only pools with an abandoned run lock are.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sdmesh.components.context import HostContext
from sdmesh.components.policy import HostPolicy, local_run_policy
from sdmesh.components.registry import component_factory
from sdmesh.hypervisor import HypervisorDriver, HypervisorError, LibvirtDriver

# The embedded default and its URI live with the simulated host (``sdmesh join`` uses them
# without importing the runner); re-exported here for ``sdmesh run``.
from sdmesh.hypervisor.simulated_host import EMBEDDED as EMBEDDED
from sdmesh.hypervisor.simulated_host import EMBEDDED_CPUS as EMBEDDED_CPUS
from sdmesh.hypervisor.simulated_host import EMBEDDED_MEMORY_MIB as EMBEDDED_MEMORY_MIB
from sdmesh.hypervisor.simulated_host import hypervisor_uri
from sdmesh.language import ResolvedDescriptor
from sdmesh.lifecycle.model import Problem, StateChanged, TerminationRecord
from sdmesh.runner.app import ApplicationRunner
from sdmesh.safeio import ensure_private_dir
from sdmesh.storage import StorageError
from sdmesh.storage.model import VolumeKeeper


class RunError(Exception):
    """The run could not start (lock held, hypervisor unreachable...)."""


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/sdmesh")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sdmesh"


class RunLock:
    """An flock that says "this pool's run is alive"; the kernel drops it when we die.

    The file is unlinked (while held) when the run ends; a locker re-checks after locking
    that the path still names the file it locked, so an unlinked or replaced lock file can
    never be held twice.
    """

    def __init__(self, directory: Path, pool: str) -> None:
        self.path = directory / f"{pool}.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False when a live process does."""
        ensure_private_dir(self.path.parent, 0o700, what="runs directory")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # unlinked or replaced under us: lock the current file instead

    def acquire(self) -> None:
        if not self.try_acquire():
            try:
                holder = self.path.read_text().strip() or "another process"
            except OSError:
                holder = "another process"
            raise RunError(
                f"pool {self.path.stem!r} is already running here (pid {holder}); "
                "terminate it first or choose another --name"
            )
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still held: see try_acquire
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def claim_abandoned(directory: Path, keep: str) -> Iterator[list[str]]:
    """Pools whose run crashed (lock file present, held by nobody), locked by us while the
    caller cleans up after them, and released (file removed) afterwards."""
    claimed: list[RunLock] = []
    try:
        if directory.is_dir():
            for lock_file in sorted(directory.glob("*.lock")):
                if lock_file.stem == keep:
                    continue
                lock = RunLock(directory, lock_file.stem)
                if lock.try_acquire():
                    claimed.append(lock)
        yield [lock.path.stem for lock in claimed]
    finally:
        for lock in claimed:
            lock.release()


async def remove_pools(
    driver: HypervisorDriver, keepers: list[VolumeKeeper], pools: set[str]
) -> list[str]:
    """Destroy the domains, then release the volumes, tagged with these pools."""
    removed: list[str] = []
    for domain in await driver.list_managed():
        if domain.metadata.pool in pools:
            with contextlib.suppress(HypervisorError):
                await driver.destroy(domain.name)
                removed.append(domain.name)
    for keeper in keepers:
        for volume in await keeper.list_owned():
            if volume.owner.pool in pools:
                with contextlib.suppress(StorageError):
                    await keeper.release(volume)
                    removed.append(str(volume.path))
    return removed


@dataclass
class LocalRun:
    """Everything one ``sdmesh run`` needs."""

    descriptor: ResolvedDescriptor
    pool: str
    hypervisor: str
    state_dir: Path
    on_state: Callable[[StateChanged], None]
    on_problem: Callable[[Problem], None]
    on_note: Callable[[str], None] = lambda message: None
    #: None: sdmesh.components.policy.local_run_policy (shell yes; allow-lists when root).
    policy: HostPolicy | None = None

    async def run(self) -> TerminationRecord:
        runs = self.state_dir / "runs"
        lock = RunLock(runs, self.pool)
        lock.acquire()
        try:
            uri = hypervisor_uri(self.hypervisor, self.state_dir)
            try:
                async with LibvirtDriver(uri) as driver:
                    return await self._run_on(driver)
            except HypervisorError as error:
                raise RunError(f"hypervisor {uri}: {error}") from None
        finally:
            lock.release()

    async def _run_on(self, driver: HypervisorDriver) -> TerminationRecord:
        context = HostContext(
            driver=driver,
            caps=await driver.capabilities(),
            state_dir=self.state_dir / "volumes",
            pool=self.pool,
            generation=1,
            descriptor_hash=f"sha256:{self.descriptor.digest()}",
            node_name=socket.gethostname(),
            warn=lambda path, message: self.on_problem(Problem(path, message)),
            policy=self.policy or local_run_policy(self.state_dir, os.geteuid()),
        )
        # Our own pool's leftovers (an earlier run of it crashed) go too: we hold its lock.
        with claim_abandoned(self.state_dir / "runs", keep=self.pool) as stale:
            removed = await remove_pools(driver, context.keepers(), {*stale, self.pool})
        if removed:
            self.on_note(f"removed {len(removed)} leftover(s) of crashed runs")

        runner = ApplicationRunner(
            self.descriptor.root,
            component_factory(context),
            self.on_state,
            self.on_problem,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(signum).name
            loop.add_signal_handler(
                signum,
                runner.terminate,
                TerminationRecord.normal_end(f"terminated by {name}"),
            )
        try:
            return await runner.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await context.close()
