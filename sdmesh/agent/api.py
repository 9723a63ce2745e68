"""The agent's HTTP control API (aiohttp), as shared/spec/cli.md describes it.

Served on the agent's Unix socket (local control) and on ``--api`` over TCP (tokens); the CLI
is its main client. JSON in and out. Who may call what: api_access.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sdmesh.agent import api_callers, api_observe, dashboard
from sdmesh.agent.api_access import caller_of, check_role, note_target
from sdmesh.agent.api_auth import install_access
from sdmesh.agent.api_context import AGENT_KEY, agent_of, failed, pool_service
from sdmesh.agent.api_docs import openapi_document
from sdmesh.agent.api_input import (
    MAX_REQUEST_BYTES,
    BadInput,
    json_object,
    parse_json_object,
)
from sdmesh.agent.api_limits import install_api_limits
from sdmesh.membership import ForceLeaveOutcome
from sdmesh.trust.components import required_role_for
from sdmesh.trust.roles import Role

if TYPE_CHECKING:
    from sdmesh.agent.api_context import AgentView
    from sdmesh.agent.api_tokens import TokenStore
    from sdmesh.agent.config import AgentConfig
    from sdmesh.pools.records import PoolSpec

#: DHT keys only the pool service writes (its records, specs and their chunks).
RESERVED_DHT_PREFIXES = ("pool/", "spec/")


_agent = agent_of


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
            "dht_drops": agent.dht_drops(),
            "dht_contacts": len(agent.dht.contacts()) if agent.dht else 0,
            "domains": sorted(d.name for d in await agent.hypervisor.list_managed())
            if agent.hypervisor
            else [],
            # Whether this host may run restartable VMs now (docs/ha.md); null: no leases.
            "lease": {"held": lease.may_run()}
            if (lease := getattr(agent, "lease", None))
            else None,
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
_pools = pool_service
_failed = failed


def check_submission_role(request: web.Request, spec: PoolSpec) -> None:
    """403 unless the caller's role allows every component of ``spec`` (shell components
    need ``admin``: sdmesh/trust/components.py)."""
    note_target(request, pool=spec.pool)
    check_role(request, required_role_for(spec.text, spec.kinds), "a pool with shell components")


def authorize_submission(request: web.Request, spec: PoolSpec, body: Mapping[str, Any]) -> bytes:
    """The caller's role for ``spec`` (403), then its operator signature (docs/security.md):
    the envelope the request carries, or the agent's own signature within the caller's role,
    checked as every host will check each leaf; the envelope to keep with the pool, or a 403
    naming why (counted). Bytes empty only for an agent with no trust store (in-process
    tests): no host runs such a pool."""
    from sdmesh.agent.pools import spec_tree
    from sdmesh.pools.signing import submission_signature
    from sdmesh.pools.submission import SubmissionError
    from sdmesh.trust.authorize import Refusal

    check_submission_role(request, spec)
    trust = agent_of(request).trust
    if trust is None:
        return b""
    role = caller_of(request).role
    try:
        result = submission_signature(body, spec, spec_tree(spec), trust, role, time.time())
    except SubmissionError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    if isinstance(result, Refusal):
        from sdmesh.trust.authorize import refusal_event

        agent = agent_of(request)
        agent.events.publish(refusal_event(result, spec.pool, "", agent.config.name))
        raise web.HTTPForbidden(text=f"pool {spec.pool}: {result.message}")
    return result


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
    if body.get("dry_run"):
        check_submission_role(request, spec)
        try:
            return web.json_response(service.dry_run(spec))
        except PoolError as error:
            raise _failed(error) from None
    signature = authorize_submission(request, spec, body)
    try:
        return web.json_response(await service.submit(spec, signature), status=201)
    except PoolError as error:
        raise _failed(error) from None


async def resolve_submission(body: Mapping[str, Any], submitted_by: str) -> PoolSpec:
    """``build_spec`` in the resolver worker process (issue 11.5: bounded, killable, under the
    agent's resolution policy), which also resolves the pool's tree once for the pool
    service's cache; 400 for a descriptor that does not make a pool, 503 when the worker is
    busy or was stopped."""
    from sdmesh.agent.pools import remember_tree
    from sdmesh.pools.resolve_worker import ResolutionStopped, build_spec_and_tree_in_worker
    from sdmesh.pools.submission import SubmissionError

    try:
        spec, tree = await build_spec_and_tree_in_worker(body, submitted_by)
    except ResolutionStopped as error:
        failure = web.HTTPServiceUnavailable if error.busy else web.HTTPBadRequest
        raise failure(text=str(error)) from None
    except SubmissionError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    remember_tree(spec, tree)
    return spec


async def list_pools(request: web.Request) -> web.Response:
    return web.json_response(_pools(request).pools())


async def pool_status(request: web.Request) -> web.Response:
    from sdmesh.agent.pools import PoolError

    try:
        return web.json_response(await _pools(request).status(request.match_info["pool"]))
    except PoolError as error:
        raise _failed(error) from None


async def termination_floor(request: web.Request) -> web.Response:
    """``GET /v1/pools/{pool}/termination``: the newest generation of the pool this agent
    knows (record, gossip, tombstones, its own runs: the floor ``DELETE`` checks a signature
    against) and the generation ``sdmesh terminate --key`` signs (``floor + SLACK``, capped).
    A 404 only where ``DELETE`` would be one too."""
    from sdmesh.agent.pools import PoolError
    from sdmesh.trust.termination import signed_up_to

    pool = request.match_info["pool"]
    try:
        floor = await _pools(request).termination_floor(pool)
    except PoolError as error:
        raise _failed(error) from None
    return web.json_response({"pool": pool, "floor": floor, "sign_up_to": signed_up_to(floor)})


async def terminate(request: web.Request) -> web.Response:
    """``DELETE /v1/pools/{pool}``, optionally with ``{"signature": text}`` (``sdmesh
    terminate --key``): with a trust store, the termination needs an operator signature
    (docs/security.md), the request's or the agent's own (``api-signing-key``)."""
    from sdmesh.agent.pools import PoolError
    from sdmesh.pools.records import check_pool_id

    service = _pools(request)
    pool = request.match_info["pool"]
    try:
        check_pool_id(pool)  # before it reaches a signature, a lookup or a log line
    except ValueError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    note_target(request, pool=pool)
    try:
        raw = await request.read()
        body = parse_json_object(raw) if raw.strip() else {}
    except BadInput as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    try:
        if agent_of(request).trust is None:  # in-process tests: no signatures
            result = await service.terminate(pool)
        else:
            newest = await service.termination_floor(pool)
            signature = authorize_termination(request, pool, newest, body.get("signature"))
            result = await service.terminate(pool, signature, newest)
    except PoolError as error:
        raise _failed(error) from None
    return web.json_response(result, status=202)


def authorize_termination(request: web.Request, pool: str, newest: int, given: object) -> bytes:
    """The operator signature ending ``pool`` (whose newest generation known here is
    ``newest``): the request's, checked against this host's trust store, or the agent's own
    for this caller (its route needs ``operate``); 400 for a malformed one, 403 naming why
    (counted, and published as a ``refused`` event)."""
    from sdmesh.pools.generations import termination_refusal
    from sdmesh.trust.authorize import Refusal, refusal_event
    from sdmesh.trust.termination import TerminationFormatError, api_termination, signed_generation

    check_role(request, Role.OPERATE, "terminating a pool")
    agent = agent_of(request)
    trust = agent.trust
    assert trust is not None
    try:
        result = api_termination(given, pool, newest, trust, time.time())
        if isinstance(result, Refusal):
            agent.events.publish(refusal_event(result, pool, "", agent.config.name))
            raise web.HTTPForbidden(text=f"pool {pool}: {result.message}")
        problem = termination_refusal(signed_generation(result), newest)
    except TerminationFormatError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    if problem is not None:  # what every host would refuse: a name poisoned for good
        raise web.HTTPBadRequest(text=f"pool {pool}: {problem}")
    return result


def _reload_tokens(tokens: TokenStore, config: AgentConfig) -> list[str]:
    """The token store and ``api-token-file`` read again; on a problem the old tokens stay."""
    from sdmesh.agent.api_auth import token_store
    from sdmesh.agent.config import ConfigError

    try:
        tokens.replace_with(token_store(config))
    except ConfigError as error:
        return [str(error)]
    return []


def build_app(agent: AgentView) -> web.Application:
    # Explicit: a submission carries its descriptor, and this is its size limit (413 beyond).
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[AGENT_KEY] = agent
    tokens = install_access(app, agent.config)  # who may call what (api_access.py)
    reloader = getattr(agent, "reloader", None)  # SIGHUP re-reads the tokens too
    if reloader is not None:
        reloader.register("api-tokens", lambda: _reload_tokens(tokens, agent.config))
    api_callers.add_routes(app, tokens)  # /v1/whoami, /v1/tokens, /v1/auth/proof
    install_api_limits(app)  # event streams per client, PUT /v1/dht rate (api_limits.py)
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
    app.router.add_get("/v1/pools/{pool}/termination", termination_floor)
    dashboard.add_routes(app, resolve_submission, authorize_submission)  # page, templates
    api_observe.add_routes(app)  # /v1/events and /metrics
    from sdmesh.agent import api_keyring  # keys, revocations, reload (track h12-identity)

    api_keyring.add_routes(app, agent)
    return app
