"""The agent's HTTP control API (aiohttp), as shared/spec/cli.md describes it.

Served on ``--api`` (loopback by default); the CLI is its main client. JSON in and out.
"""

from __future__ import annotations

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
        {"name": agent.config.name, "status": agent.status, "drops": agent.drops()}
    )


def build_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/peers", peers)
    app.router.add_post("/v1/leave", leave)
    app.router.add_get("/v1/health", health)
    return app
