"""Takeovers in the pool service's driver: one at a time per pool, backing off while there is
no usable record, and never from the local record file when the DHT lookup failed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdmesh.agent import pools as ap
from sdmesh.agent.pools import following, store, trees
from sdmesh.pools.records import PoolRecord

from .test_pool_service_ends import FakeDht, service


def ours(svc: ap.PoolService) -> str:
    """A pool name this agent (h0) is the shepherd of."""
    return next(p for p in (f"p{i}" for i in range(1000)) if svc.shepherd_for(p) == "h0")


def eligible(svc: ap.PoolService, pool: str) -> None:
    svc.known[pool] = ap.KnownPool("d", "running", "h1", 0.0, 3)


def fake_dht(svc: ap.PoolService) -> FakeDht:
    assert isinstance(svc.dht, FakeDht)
    return svc.dht


def capture_shepherd(svc: ap.PoolService, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what a takeover would start from, without a real descriptor."""
    started: list[Any] = []
    cached = trees.TreeCache()
    cached.put("d", object(), 1)
    monkeypatch.setattr(trees, "_TREES", cached)

    async def spec(digest: str, pool: str | None = None) -> Any:
        return SimpleNamespace(pool=pool, digest=digest)

    async def shepherd(spec: Any, generation: int, old: PoolRecord | None, *_: Any) -> None:
        started.append((spec.pool, generation, old))

    monkeypatch.setattr(svc, "spec", spec)
    monkeypatch.setattr(svc, "_shepherd", shepherd)
    return started


def test_a_burst_of_view_events_starts_one_takeover(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        pool = ours(svc)
        eligible(svc, pool)
        dht = fake_dht(svc)
        release = asyncio.Event()
        lookups = 0
        get = dht.get

        async def slow_get(key: str, quorum: int | None = None) -> Any:
            nonlocal lookups
            lookups += 1
            await release.wait()  # a full-replica read that takes its time
            return await get(key, quorum)

        dht.get = slow_get  # type: ignore[method-assign]
        for _ in range(5):
            svc._apply_view()
            await asyncio.sleep(0)
        assert lookups == 1 and list(svc._takeovers) == [pool]
        release.set()
        for _ in range(100):  # the local record file is read in a worker thread
            if not svc._takeovers:
                break
            await asyncio.sleep(0.01)
        assert svc._takeovers == {}  # cleaned up once done (no record: a retry waits)
        assert pool in svc._takeover_retry
        svc._apply_view()  # while the retry waits, view events start nothing
        await asyncio.sleep(0.01)
        assert lookups == 1 and svc._takeovers == {}
        await svc.close()

    asyncio.run(go())


def test_a_cancelled_takeover_is_forgotten(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        pool = ours(svc)
        eligible(svc, pool)
        dht = fake_dht(svc)
        never = asyncio.Event()

        async def hung_get(key: str, quorum: int | None = None) -> Any:
            await never.wait()

        dht.get = hung_get  # type: ignore[method-assign]
        svc._apply_view()
        await asyncio.sleep(0)
        task = svc._takeovers[pool]
        task.cancel()
        await asyncio.sleep(0.01)
        assert svc._takeovers == {}
        svc._apply_view()  # a later view event may start one again
        await asyncio.sleep(0)
        assert pool in svc._takeovers
        await svc.close()

    asyncio.run(go())


def test_a_missing_record_backs_off_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        pool = ours(svc)
        eligible(svc, pool)
        delays = []
        with caplog.at_level(logging.DEBUG, logger="sdmesh.agent.pools"):
            for _ in range(8):
                await svc._take_over(pool)
                handle = svc._takeover_retry[pool]
                delays.append(round(handle.when() - svc._loop.time()))
        assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "no record in the DHT yet" in warnings[0].getMessage()
        assert len(svc._takeover_retry) == 1  # each retry replaces the one before
        await svc.close()
        assert svc._takeover_retry == {}

    asyncio.run(go())


async def until(condition: Any, timeout: float = 5.0) -> None:
    """Wait for ``condition`` (the local record file is read in a worker thread: its pace
    depends on the machine's load, so no fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.005)


def test_the_retry_looks_at_the_view_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "TAKEOVER_RETRY_FIRST", 0.2)

    async def go() -> None:
        svc = service(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        eligible(svc, pool)
        svc._apply_view()
        await until(lambda: pool in svc._takeover_retry)  # no record yet: a retry waits
        assert started == []
        record = PoolRecord(pool, "d", 4, "h1", "running")
        fake_dht(svc).stored[f"pool/{pool}"] = b"\x00" + record.encode()
        await until(lambda: started != [])
        assert started == [(pool, 5, record)]
        await until(lambda: svc._takeover_retry == {})
        assert svc._takeover_misses == {}
        await svc.close()

    asyncio.run(go())


def test_a_failed_lookup_does_not_take_over_from_the_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        eligible(svc, pool)
        local = PoolRecord(pool, "d", 5, "h0", "running")  # ours, from an earlier tenure
        (tmp_path / "specs" / f"{pool}.record").write_bytes(local.encode())
        dht = fake_dht(svc)
        dht.fail_get = True
        await svc._take_over(pool)
        assert started == [] and pool in svc._takeover_retry  # tried again later
        dht.fail_get = False  # the DHT answers: nothing there, so our file is all there is
        await svc._take_over(pool)
        assert started == [(pool, 6, local)]
        await svc.close()

    asyncio.run(go())


@pytest.mark.parametrize(("in_dht", "expected"), [(3, 6), (7, 8)])
def test_the_local_file_counts_only_when_newer_than_the_dht(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_dht: int, expected: int
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        local = PoolRecord(pool, "d", 5, "h0", "running")
        (tmp_path / "specs" / f"{pool}.record").write_bytes(local.encode())
        stored = PoolRecord(pool, "d", in_dht, "h1", "running")
        fake_dht(svc).stored[f"pool/{pool}"] = b"\x00" + stored.encode()
        await svc._take_over(pool)
        assert [(p, g) for p, g, _ in started] == [(pool, expected)]
        assert started[0][2] == (local if in_dht < 5 else stored)
        await svc.close()

    asyncio.run(go())


def test_records_and_specs_are_written_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    writers: list[str] = []
    write = store.write_private

    def spy(path: Path, data: bytes) -> None:
        writers.append(threading.current_thread().name)
        write(path, data)

    monkeypatch.setattr(store, "write_private", spy)

    async def go() -> None:
        svc = service(tmp_path)
        record = PoolRecord("web", "d", 2, "h0", "running")
        assert await svc.write_record(record)
        assert await svc._local_record("web") == record
        await svc.close()

    asyncio.run(go())
    assert writers and threading.main_thread().name not in writers
    assert not list((tmp_path / "specs").glob("*.tmp"))


def test_a_tree_is_resolved_in_the_worker_once_per_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdmesh.pools import resolve_worker
    from sdmesh.pools.submission import build_spec

    monkeypatch.setattr(trees, "_TREES", trees.TreeCache())
    spec = build_spec({"name": "web", "descriptor": "sfConfig extends { x 1; }"})

    async def go() -> None:
        first = await trees.tree_of(spec)
        pid = resolve_worker.default_worker().pid
        assert pid is not None and first.get("x") == 1  # resolved in the worker process
        assert await trees.tree_of(spec) is first  # cached per digest: resolved once
        await resolve_worker.stop_resolver()

    asyncio.run(go())
