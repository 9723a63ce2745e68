"""The agent's HTTP control API (aiohttp), as shared/spec/cli.md describes it.

Served on ``--api`` (loopback by default); the CLI is its main client. JSON in and out.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from sdmesh.agent.agent import Agent

AGENT_KEY = web.AppKey("agent", object)


def _agent(request: web.Request) -> Agent:
    agent = request.app[AGENT_KEY]
    return agent  # type: ignore[return-value]


async def peers(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).peers())


async def leave(request: web.Request) -> web.Response:
    _agent(request).request_leave()
    return web.json_response({"leaving": True}, status=202)


async def health(request: web.Request) -> web.Response:
    agent = _agent(request)
    return web.json_response(
        {
            "name": agent.config.name,
            "status": agent.status,
            "drops": agent.drops(),
            "dht_contacts": len(agent.dht.contacts()) if agent.dht else 0,
        }
    )


async def dht_put(request: web.Request) -> web.Response:
    """Store a value in the DHT (debugging and tests; pools use the DHT internally)."""
    agent = _agent(request)
    if agent.dht is None:
        raise web.HTTPServiceUnavailable(text="the DHT is not running yet")
    try:
        generation = int(request.query.get("generation", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="generation must be an integer") from None
    stored = await agent.dht.put(request.match_info["key"], await request.read(), generation)
    return web.json_response({"stored": stored})


async def dht_get(request: web.Request) -> web.Response:
    agent = _agent(request)
    if agent.dht is None:
        raise web.HTTPServiceUnavailable(text="the DHT is not running yet")
    record = await agent.dht.get(request.match_info["key"])
    if record is None:
        raise web.HTTPNotFound(text="no such key")
    return web.json_response(
        {"value": base64.b64encode(record.value).decode(), "generation": record.generation}
    )


def build_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/peers", peers)
    app.router.add_post("/v1/leave", leave)
    app.router.add_get("/v1/health", health)
    app.router.add_put("/v1/dht/{key}", dht_put)
    app.router.add_get("/v1/dht/{key}", dht_get)
    return app
