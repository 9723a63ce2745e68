"""Watching an agent over HTTP: ``GET /v1/events`` (live events) and ``GET /metrics``.

``/v1/events`` streams JSON lines (``application/x-ndjson``, one event per line, each sent as
it happens), or Server-Sent Events when the client asks for ``text/event-stream`` (the
dashboard's EventSource). Both send a heartbeat (a blank line, an SSE comment) every
``HEARTBEAT_SECONDS`` so proxies and load balancers keep an idle stream open. History:
``?backlog=N`` starts with the last N kept events, ``?since=TIME`` with those newer than a
Unix time (an event's ``time``); SSE's ``Last-Event-ID`` resumes after the last event seen.

Streams end when the agent stops: the app's ``on_shutdown`` closes every subscription before
aiohttp waits for its handlers, so shutting down never waits on a follower.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sdmesh.agent.api_context import AGENT_KEY, AgentView
from sdmesh.agent.events import RECENT_EVENTS, Event, EventHub
from sdmesh.agent.metrics import AgentMetrics
from sdmesh.finite import finite_number

log = logging.getLogger(__name__)

#: Seconds between heartbeats on an idle event stream.
HEARTBEAT_SECONDS = 15.0
#: Event streams served at once; each holds a connection and up to QUEUE_EVENTS events, so
#: past this a client gets 503 rather than the agent running out of sockets or memory.
MAX_STREAMS = 64

EVENTS_KEY = web.AppKey("sdmesh_events", EventHub)
METRICS_KEY = web.AppKey("sdmesh_metrics", AgentMetrics)


def add_routes(app: web.Application) -> None:
    """Serve ``/v1/events`` and ``/metrics`` for the agent ``build_app`` put in ``app``."""
    agent: AgentView = app[AGENT_KEY]  # type: ignore[assignment]
    app[EVENTS_KEY] = agent.events
    app[METRICS_KEY] = AgentMetrics(agent)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    app[EVENTS_KEY].close()


def _history(request: web.Request) -> tuple[int | None, float | None, int | None]:
    """``backlog``, ``since`` and ``Last-Event-ID``, checked (400 when malformed)."""
    query = request.query
    try:
        backlog = int(query["backlog"]) if "backlog" in query else None
        since = float(query["since"]) if "since" in query else None
    except ValueError:
        raise web.HTTPBadRequest(
            text="backlog must be an integer and since a Unix time in seconds"
        ) from None
    if since is not None and finite_number(since) is None:  # float() reads nan and inf
        raise web.HTTPBadRequest(text="since must be a finite Unix time in seconds")
    if backlog is not None and backlog < 0:
        raise web.HTTPBadRequest(text="backlog cannot be negative")
    if backlog is not None:
        backlog = min(backlog, RECENT_EVENTS)
    last = request.headers.get("Last-Event-ID", "").strip()
    after = int(last) if last.isdigit() else None
    return backlog, since, after


def _wants_sse(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def _sse(event: Event, event_id: int | None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    backlog, since, after = _history(request)
    if request.app[EVENTS_KEY].subscribers >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(
            text=f"this agent already serves {MAX_STREAMS} event streams; try again later",
            headers={"Retry-After": "10"},
        )
    sse = _wants_sse(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    subscription = request.app[EVENTS_KEY].subscribe(backlog, since, after)
    heartbeat = b": keepalive\n\n" if sse else b"\n"
    try:
        await response.prepare(request)
        if sse:
            await response.write(b"retry: 2000\n\n")  # how soon EventSource reconnects
        while True:
            try:
                event = await subscription.next(HEARTBEAT_SECONDS)
            except StopAsyncIteration:
                break
            if event is None:
                await response.write(heartbeat)
            elif sse:
                marker = event.get("type") == "overflow"
                await response.write(_sse(event, None if marker else subscription.last_id))
            else:
                await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    except ConnectionResetError:
        pass  # the follower went away
    finally:
        subscription.close()
    return response


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


__all__ = ["HEARTBEAT_SECONDS", "MAX_STREAMS", "add_routes", "events", "metrics"]
