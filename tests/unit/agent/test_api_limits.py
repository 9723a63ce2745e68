"""API limits (issue 12, item 4): connection caps, slow headers, event streams per client,
the debug DHT route's rate; the decisions alone, then through aiohttp on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sdmesh.agent.api_limits import (
    ApiLimits,
    SourceSlots,
    TokenBucket,
    connection_budget,
    install_api_limits,
    serve,
)
from sdmesh.transport.gate import ConnectionGate


def test_source_slots_cap_each_source_and_the_total() -> None:
    slots = SourceSlots(2, total=3)
    assert slots.acquire("a") and slots.acquire("a")
    assert not slots.acquire("a")
    assert slots.acquire("b")
    assert not slots.acquire("c")  # the total
    slots.release("a")
    assert slots.acquire("c")
    slots.release("nobody")  # harmless
    assert len(slots) == 3 and slots.refused == 2 and slots.held("a") == 1


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0
    assert bucket.take(100.0) == 0.0  # refilled, never past the burst
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


LIMITS = ApiLimits(
    max_connections=50,
    max_connections_per_source=5,
    max_pending_per_source=3,
    header_timeout=0.5,
    max_event_streams_per_client=2,
    dht_writes_per_second=1.0,
    dht_write_burst=3,
)


async def forever(request: web.Request) -> web.StreamResponse:
    """Like /v1/events: heartbeats until the follower goes away."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"open\n")
    try:
        for _ in range(300):
            await asyncio.sleep(0.05)
            await response.write(b"\n")
    except ConnectionResetError:
        pass
    return response


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, int, ConnectionGate]]:
    app = web.Application()
    app.router.add_get("/v1/events", forever)
    app.router.add_get("/v1/health", ok)
    app.router.add_put("/v1/dht/{key}", ok)
    install_api_limits(app, LIMITS)
    runner = web.AppRunner(app, keepalive_timeout=LIMITS.header_timeout)
    await runner.setup()
    listener, gate = await serve(runner, "127.0.0.1", 0, limits=LIMITS)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port, gate
    finally:
        listener.close()
        await runner.cleanup()


async def closed(reader: asyncio.StreamReader) -> None:
    """The server closed (or reset) the connection without answering."""
    with contextlib.suppress(ConnectionResetError):
        assert await reader.read() == b""


async def get(port: int, path: str, method: str = "GET") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status


async def test_half_sent_connections_are_capped_per_source_and_time_out(
    api: tuple[str, int, ConnectionGate],
) -> None:
    host, port, gate = api
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    for _ in range(20):  # each with half a request line, from the clients' own address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /v1/hea")
        readers.append(reader)
        writers.append(writer)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert gate.held(host) <= LIMITS.max_pending_per_source
    assert gate.evicted >= 20 - LIMITS.max_pending_per_source
    # A real request from the same address still gets in, in place of a half-sent one.
    assert await get(port, "/v1/health") == 200
    async with asyncio.timeout(5):  # every one is closed: evicted, or after header_timeout
        for reader in readers:
            await closed(reader)
    await asyncio.sleep(0.1)
    assert gate.held(host) == 0
    for writer in writers:
        writer.close()


async def test_established_connections_are_capped_per_source(
    api: tuple[str, int, ConnectionGate],
) -> None:
    host, port, gate = api
    async with aiohttp.ClientSession() as session:
        streams = []
        for _ in range(2):  # two long requests (the per-client stream cap is 2)
            response = await session.get(f"http://127.0.0.1:{port}/v1/events")
            streams.append(response)
        idle = []
        for _ in range(LIMITS.max_connections_per_source - 2):  # complete heads, then idle
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.append((reader, writer))
        await asyncio.sleep(0.2)
        assert gate.held(host) == LIMITS.max_connections_per_source and gate.pending == 0
        reader, writer = await asyncio.open_connection(host, port)
        await closed(reader)  # refused: every connection of this source sent a request
        assert gate.refused >= 1
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        for stream in streams:
            stream.close()


async def test_event_streams_are_bounded_per_client(api: tuple[str, int, ConnectionGate]) -> None:
    _, port, _ = api
    async with aiohttp.ClientSession() as session:
        streams: list[Any] = []
        for _ in range(LIMITS.max_event_streams_per_client):
            response = await session.get(f"http://127.0.0.1:{port}/v1/events")
            assert response.status == 200
            assert await response.content.readline() == b"open\n"  # slot taken
            streams.append(response)
        extra = await session.get(f"http://127.0.0.1:{port}/v1/events")
        assert extra.status == 429 and "Retry-After" in extra.headers
        extra.close()
        streams[0].close()
        await asyncio.sleep(0.3)  # the next heartbeat finds the follower gone
        again = await session.get(f"http://127.0.0.1:{port}/v1/events")
        assert again.status == 200
        again.close()
        for stream in streams[1:]:
            stream.close()


async def test_the_debug_dht_route_is_rate_limited(api: tuple[str, int, ConnectionGate]) -> None:
    _, port, _ = api
    # A burst, then the rate: on a loaded machine the bucket refills while the requests go
    # out, so allow for what the elapsed time earned (never more).
    started = time.monotonic()
    statuses = [await get(port, "/v1/dht/k", "PUT") for _ in range(LIMITS.dht_write_burst + 8)]
    earned = math.ceil((time.monotonic() - started) * LIMITS.dht_writes_per_second)
    assert statuses[: LIMITS.dht_write_burst] == [200] * LIMITS.dht_write_burst
    assert 429 in statuses
    assert statuses.count(200) <= LIMITS.dht_write_burst + earned
    assert await get(port, "/v1/health") == 200  # other routes are not affected


def test_the_connection_budget_leaves_most_descriptors_to_the_rest() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = connection_budget(ApiLimits())
    assert 16 <= budget <= ApiLimits().max_connections
    if soft != resource.RLIM_INFINITY:
        assert budget <= max(16, soft // 4)
