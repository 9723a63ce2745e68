"""The agent's HTTP control API (aiohttp), as shared/spec/cli.md describes it.

Served on ``--api`` (loopback by default); the CLI is its main client. JSON in and out.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sdmesh.agent.api_auth import install_auth
from sdmesh.agent.api_docs import openapi_document
from sdmesh.agent.api_input import (
    MAX_REQUEST_BYTES,
    RESOLVE_TIMEOUT,
    BadInput,
    json_object,
    off_loop,
)
from sdmesh.membership import ForceLeaveOutcome

if TYPE_CHECKING:
    from sdmesh.agent.agent import Agent
    from sdmesh.agent.pools import PoolService
    from sdmesh.pools.records import PoolSpec

AGENT_KEY = web.AppKey("agent", object)
#: DHT keys only the pool service writes (its records, specs and their chunks).
RESERVED_DHT_PREFIXES = ("pool/", "spec/")


def _agent(request: web.Request) -> Agent:
    agent = request.app[AGENT_KEY]
    return agent  # type: ignore[return-value]


async def peers(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).peers())


async def leave(request: web.Request) -> web.Response:
    _agent(request).request_leave()
    return web.json_response({"leaving": True}, status=202)


async def force_leave(request: web.Request) -> web.Response:
    """Force a failed member out (``sdmesh force-leave``): every member then counts it as
    left, so the pools' majority rule stops waiting for a host that is gone for good."""
    node = _agent(request).node
    if node is None:
        raise web.HTTPServiceUnavailable(text="the agent is still starting; try again")
    name = request.match_info["name"]
    result = node.force_leave(name)
    member = result.member
    if result.outcome.done and member is not None:
        answer = {
            "name": name,
            "outcome": result.outcome.value,
            "state": member.state.value,
            "incarnation": member.incarnation,
        }
        return web.json_response(answer)
    refusals: dict[ForceLeaveOutcome, tuple[type[web.HTTPException], str]] = {
        ForceLeaveOutcome.UNKNOWN: (
            web.HTTPNotFound,
            f"{name} is not a member this agent knows ('sdmesh peers' lists them)",
        ),
        ForceLeaveOutcome.ALIVE: (
            web.HTTPConflict,
            f"{name} is alive; only failed members can be forced out",
        ),
        ForceLeaveOutcome.SUSPECT: (
            web.HTTPConflict,
            f"{name} is suspected, not failed yet; only failed members can be forced out "
            "(its verdict comes within seconds: try again)",
        ),
        ForceLeaveOutcome.SELF: (
            web.HTTPConflict,
            f"{name} is this agent; 'sdmesh leave' makes it leave gracefully",
        ),
    }
    kind, text = refusals.get(
        result.outcome, (web.HTTPServiceUnavailable, "this agent is leaving the mesh")
    )
    raise kind(text=text)


async def health(request: web.Request) -> web.Response:
    agent = _agent(request)
    return web.json_response(
        {
            "name": agent.config.name,
            "status": agent.status,
            "drops": agent.drops(),
            "dht_contacts": len(agent.dht.contacts()) if agent.dht else 0,
            "domains": sorted(d.name for d in await agent.hypervisor.list_managed())
            if agent.hypervisor
            else [],
        }
    )


async def dht_put(request: web.Request) -> web.Response:
    """Store a value in the DHT (debugging and tests; pools use the DHT internally). Pool
    records and specs are not writable here: a client could otherwise replace a pool's
    descriptor or state behind the pool service's back."""
    agent = _agent(request)
    key = request.match_info["key"]
    if key.startswith(RESERVED_DHT_PREFIXES):
        raise web.HTTPForbidden(
            text=f"{key!r} is a pool record: keys under {', '.join(RESERVED_DHT_PREFIXES)} are "
            "written by the pool service only (use POST /v1/pools and DELETE /v1/pools/POOL)"
        )
    if agent.dht is None:
        raise web.HTTPServiceUnavailable(text="the DHT is not running yet")
    try:
        generation = int(request.query.get("generation", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="generation must be an integer") from None
    stored = await agent.dht.put(key, await request.read(), generation)
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


# ---------------------------------------------------------------------------- pools
def _pools(request: web.Request) -> PoolService:
    service = _agent(request).pools
    if service is None:
        raise web.HTTPServiceUnavailable(text="the agent is still starting; try again")
    return service


def _failed(error: Exception) -> web.HTTPException:
    status = getattr(error, "status", 400)
    kinds: dict[int, type[web.HTTPException]] = {
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,  # leaving, or no majority of the mesh: ask another
    }
    return kinds.get(status, web.HTTPBadRequest)(text=str(error))


async def submit(request: web.Request) -> web.Response:
    """``{"descriptor": text, "name"?, "kinds"?, "dry_run"?}``: the descriptor is resolved
    here (against the built-in library; the CLI sends it already resolved, with its includes
    inlined, so files only it can read still count)."""
    from sdmesh.agent.pools import PoolError

    service = _pools(request)
    try:
        body = await json_object(request)
    except BadInput as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    spec = await resolve_submission(body, service.name)
    try:
        if body.get("dry_run"):
            return web.json_response(service.dry_run(spec))
        return web.json_response(await service.submit(spec), status=201)
    except PoolError as error:
        raise _failed(error) from None


async def resolve_submission(body: Mapping[str, Any], submitted_by: str) -> PoolSpec:
    """``build_spec`` in a worker thread under a time limit (the loop keeps serving probes
    and gossip), which also resolves the pool's tree once for the pool service's cache, so it
    is not resolved again on the loop; 400 for a descriptor that does not make a pool."""
    from sdmesh.agent.pools import remember_tree
    from sdmesh.pools.submission import SubmissionError, build_spec_and_tree

    def work() -> PoolSpec:
        spec, tree = build_spec_and_tree(body, submitted_by=submitted_by)
        remember_tree(spec, tree)
        return spec

    try:
        return await off_loop(work, RESOLVE_TIMEOUT)
    except SubmissionError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    except TimeoutError:
        raise web.HTTPServiceUnavailable(
            text=f"resolving the descriptor took over {RESOLVE_TIMEOUT:.0f} s; the agent is "
            "busy or the descriptor too large: try again, or submit through another agent"
        ) from None


async def list_pools(request: web.Request) -> web.Response:
    return web.json_response(_pools(request).pools())


async def pool_status(request: web.Request) -> web.Response:
    from sdmesh.agent.pools import PoolError

    try:
        return web.json_response(await _pools(request).status(request.match_info["pool"]))
    except PoolError as error:
        raise _failed(error) from None


async def terminate(request: web.Request) -> web.Response:
    from sdmesh.agent.pools import PoolError

    try:
        result = await _pools(request).terminate(request.match_info["pool"])
    except PoolError as error:
        raise _failed(error) from None
    return web.json_response(result, status=202)


def build_app(agent: Agent) -> web.Application:
    # Explicit: a submission carries its descriptor, and this is its size limit (413 beyond).
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[AGENT_KEY] = agent
    install_auth(app, agent.config)  # the token for non-loopback peers (api_auth.py)
    app.router.add_get("/v1/openapi.yaml", openapi_document)
    app.router.add_get("/v1/peers", peers)
    app.router.add_post("/v1/leave", leave)
    app.router.add_post("/v1/peers/{name}/force-leave", force_leave)
    app.router.add_get("/v1/health", health)
    app.router.add_put("/v1/dht/{key}", dht_put)
    app.router.add_get("/v1/dht/{key}", dht_get)
    app.router.add_post("/v1/pools", submit)
    app.router.add_get("/v1/pools", list_pools)
    app.router.add_get("/v1/pools/{pool}", pool_status)
    app.router.add_delete("/v1/pools/{pool}", terminate)
    from sdmesh.agent import dashboard  # the web page and /v1/templates

    dashboard.add_routes(app)
    from sdmesh.agent import api_observe  # /v1/events and /metrics

    api_observe.add_routes(app)
    from sdmesh.agent import api_keyring  # keys, revocations, reload (track h12-identity)

    api_keyring.add_routes(app, agent)
    return app
