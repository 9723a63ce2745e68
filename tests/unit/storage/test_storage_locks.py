"""Per-host locks: shared/exclusive within a process and across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from sdmesh.storage.locks import HostLocks


async def test_readers_share_and_writers_exclude(tmp_path: Path) -> None:
    lock = HostLocks(tmp_path).base_image("/images/base.img")
    inside = 0
    peak = 0
    log: list[str] = []

    async def reader(i: int) -> None:
        nonlocal inside, peak
        async with lock.shared():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            log.append(f"r{i}")

    async def writer() -> None:
        async with lock.exclusive():
            assert inside == 0
            log.append("w-in")
            await asyncio.sleep(0.01)
            assert inside == 0
            log.append("w-out")

    await asyncio.gather(
        *(reader(i) for i in range(10)), writer(), *(reader(i) for i in range(10, 20))
    )
    assert peak > 1  # readers really overlapped
    assert log.index("w-out") == log.index("w-in") + 1


async def test_same_key_same_lock_and_a_bounded_number_of_lock_files(tmp_path: Path) -> None:
    locks = HostLocks(tmp_path / "locks")
    assert locks.volume("/v/a") is locks.volume("/v/a")
    assert locks.base_image("/images/a.img") is not locks.base_image("/images/b.img")
    for i in range(1000):
        async with locks.volume(f"/v/vm{i}").exclusive():
            pass
    files = list((tmp_path / "locks").iterdir())
    assert len(files) <= HostLocks.VOLUME_STRIPES and {p.suffix for p in files} == {".lock"}


async def test_exclusive_waits_for_another_process(tmp_path: Path) -> None:
    lock = HostLocks(tmp_path).volume("/v/a")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock.path)!r}, 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(0.5)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        async with lock.exclusive():
            waited = time.monotonic() - started
        assert waited > 0.2  # it waited for the other process, without blocking the loop
    finally:
        holder.wait(5)
