"""``/v1/events`` (JSON lines and SSE, heartbeats, shutdown) and ``/metrics`` over HTTP,
against a stand-in agent: an EventHub and nothing else running."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent import api_observe
from sdmesh.agent.api import AGENT_KEY
from sdmesh.agent.events import EventHub


def stand_in() -> Any:
    return SimpleNamespace(
        events=EventHub(), node=None, dht=None, pools=None, hypervisor=None, drops=dict
    )


@pytest.fixture
async def client() -> Any:
    app = web.Application()
    app[AGENT_KEY] = stand_in()
    api_observe.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        yield client


async def next_line(response: Any) -> bytes:
    return bytes(await asyncio.wait_for(response.content.readline(), 5))


async def test_json_lines_one_per_event_as_they_happen(client: Any) -> None:
    hub = client.app[AGENT_KEY].events
    hub.publish({"type": "pool", "pool": "old"})
    response = await client.get("/v1/events?backlog=1")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert json.loads(await next_line(response))["pool"] == "old"
    hub.publish({"type": "member", "name": "b"})
    event = json.loads(await next_line(response))
    assert event["name"] == "b" and isinstance(event["time"], float)
    response.close()


async def test_server_sent_events_for_event_source(client: Any) -> None:
    hub = client.app[AGENT_KEY].events
    response = await client.get("/v1/events", headers={"Accept": "text/event-stream"})
    assert response.headers["Content-Type"] == "text/event-stream"
    assert await next_line(response) == b"retry: 2000\n"
    assert await next_line(response) == b"\n"
    hub.publish({"type": "pool", "pool": "p"})
    assert await next_line(response) == b"id: 1\n"
    data = await next_line(response)
    assert data.startswith(b"data: ") and json.loads(data[6:])["pool"] == "p"
    response.close()
    # Reconnecting with Last-Event-ID resumes after it.
    hub.publish({"type": "pool", "pool": "q"})
    again = await client.get(
        "/v1/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "1"}
    )
    lines = [await next_line(again) for _ in range(4)]
    assert lines[2] == b"id: 2\n" and json.loads(lines[3][6:])["pool"] == "q"
    again.close()


async def test_idle_streams_get_heartbeats(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(api_observe, "HEARTBEAT_SECONDS", 0.05)
    response = await client.get("/v1/events")
    assert await next_line(response) == b"\n"
    sse = await client.get("/v1/events", headers={"Accept": "text/event-stream"})
    lines = [await next_line(sse) for _ in range(4)]
    assert lines[2:] == [b": keepalive\n", b"\n"]
    response.close()
    sse.close()


async def test_bad_history_parameters_are_refused(client: Any) -> None:
    for query in ("backlog=x", "backlog=-1", "since=yesterday"):
        response = await client.get(f"/v1/events?{query}")
        assert response.status == 400, query


async def test_followers_that_leave_are_forgotten(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(api_observe, "HEARTBEAT_SECONDS", 0.05)
    hub = client.app[AGENT_KEY].events
    response = await client.get("/v1/events")
    await asyncio.sleep(0.05)
    assert hub.subscribers == 1
    response.close()
    for _ in range(100):  # found out at the next heartbeat
        if hub.subscribers == 0:
            break
        await asyncio.sleep(0.02)
    assert hub.subscribers == 0


async def test_shutdown_ends_open_streams_at_once() -> None:
    app = web.Application()
    app[AGENT_KEY] = stand_in()
    api_observe.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert b"200" in await asyncio.wait_for(reader.readline(), 5)
    began = time.monotonic()
    await asyncio.wait_for(runner.cleanup(), 10)
    assert time.monotonic() - began < 2  # not aiohttp's 60 s shutdown timeout
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.endswith(b"0\r\n\r\n")  # the chunked stream was ended properly
    writer.close()


async def test_metrics_in_prometheus_text_format(client: Any) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for family in (
        "sdmesh_members gauge",
        "sdmesh_frames_dropped_total counter",
        "sdmesh_pools gauge",
        "sdmesh_components gauge",
        "sdmesh_deploy_phase_seconds histogram",
        "sdmesh_event_followers gauge",
    ):
        assert f"# TYPE {family}\n" in text, family
