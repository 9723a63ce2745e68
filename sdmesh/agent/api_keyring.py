"""Admin routes for the mesh's keys: the cluster key ring, host revocations, reload.

* ``GET /v1/keyring``: installed key ids and the primary.
* ``POST /v1/keyring`` ``{"op": "install", "key": B64}`` or ``{"op": "use"|"remove",
  "key_id": HEX}``: one rotation step, here and (unless ``"mesh": false``) on every live
  member (sdmesh/agent/keyring_admin.py says why over the mesh); each member's outcome.
* ``POST /v1/identity/revocations`` ``{"revocation": B64}``: a CA-signed revocation
  (``sdmesh ca revoke``); the member is dropped here and the revocation gossiped.
* ``POST /v1/reload``: what SIGHUP does, with each part's problems.

All are admin-only: see ``caller_is_admin``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from sdmesh.agent.api_access import caller_of
from sdmesh.agent.api_input import BadInput, json_object
from sdmesh.agent.keyring_admin import (
    InstructionError,
    KeyringAdmin,
    KeyringInstruction,
    parse_request,
)
from sdmesh.membership import Revoke
from sdmesh.transport import StreamError
from sdmesh.trust.identity import IdentityError, Revocation
from sdmesh.trust.roles import Role

if TYPE_CHECKING:
    from sdmesh.agent.config import AgentConfig
    from sdmesh.agent.mesh import MeshNode
    from sdmesh.membership.identity import IdentityChecker


class Agent(Protocol):
    """What these routes need of the agent (a Protocol: the agent imports the API, so the API
    must not import the agent)."""

    config: AgentConfig
    node: MeshNode | None
    identity: IdentityChecker | None
    keyring_admin: KeyringAdmin | None

    def reload(self) -> dict[str, list[str]]: ...


FANOUT_TIMEOUT = 5.0
AGENT = web.AppKey("keyring-agent", object)


def caller_is_admin(request: web.Request) -> bool:
    """Whether the caller (identified by the API's guard, api_access.py) holds ``admin``. The
    guard already refuses these routes to anyone else (they are not in its table of lower
    roles); this is the second lock on the door."""
    return caller_of(request).role.allows(Role.ADMIN)


def _admin(request: web.Request) -> Agent:
    if not caller_is_admin(request):
        raise web.HTTPForbidden(text="this route needs the admin role")
    agent: Agent = request.app[AGENT]  # type: ignore[assignment]
    if agent.node is None or agent.keyring_admin is None:
        raise web.HTTPServiceUnavailable(text="the agent is still starting; try again")
    return agent


async def _json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (api_input: valid Unicode, finite numbers), else 400."""
    try:
        return await json_object(request)
    except BadInput as error:
        raise web.HTTPBadRequest(text=str(error)) from None


async def keyring_list(request: web.Request) -> web.Response:
    agent = _admin(request)
    assert agent.keyring_admin is not None
    return web.json_response(agent.keyring_admin.describe())


async def keyring_change(request: web.Request) -> web.Response:
    agent = _admin(request)
    admin, node = agent.keyring_admin, agent.node
    assert admin is not None and node is not None
    body = await _json(request)
    try:
        op, key = parse_request(body)
    except InstructionError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    instruction = admin.make(op, key)
    try:
        local = admin.apply(instruction)
    except InstructionError as error:
        raise web.HTTPConflict(text=f"{agent.config.name}: {error}") from None
    members: dict[str, str] = {}
    if body.get("mesh", True) is not False:
        others = [m for m in node.core.live_members() if m.name != agent.config.name]
        outcomes = await asyncio.gather(
            *(_send(agent, m.addr, instruction) for m in others), return_exceptions=False
        )
        members = {m.name: outcome for m, outcome in zip(others, outcomes, strict=True)}
    failed = sorted(name for name, outcome in members.items() if not outcome.endswith("done"))
    return web.json_response(
        {"local": local, "members": members, "failed": failed, **admin.describe()}
    )


async def _send(agent: Agent, addr: tuple[str, int], instruction: KeyringInstruction) -> str:
    assert agent.node is not None
    try:
        reply = await agent.node.client.request(addr, instruction.to_wire(), timeout=FANOUT_TIMEOUT)
    except (StreamError, OSError) as error:
        return f"unreachable: {error}"
    if isinstance(reply, dict) and isinstance(reply.get("result"), str):
        return str(reply["result"])
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return f"refused: {reply['error']}"
    return "refused: no answer"


async def revoke(request: web.Request) -> web.Response:
    agent = _admin(request)
    body = await _json(request)
    text = body.get("revocation")
    identity = agent.identity
    if identity is None:
        raise web.HTTPConflict(text="this agent has no identity-ca: nothing to revoke")
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        revocation = Revocation.decode(data)
    except (binascii.Error, ValueError, IdentityError):
        raise web.HTTPBadRequest(text="'revocation' must be the base64 of a revocation") from None
    if not revocation.valid_under(identity.ca):
        raise web.HTTPForbidden(text="the revocation is not signed by this mesh's CA")
    assert agent.node is not None
    agent.node.feed(Revoke(revocation))
    return web.json_response({"serial": revocation.serial, "name": revocation.name})


async def reload(request: web.Request) -> web.Response:
    if not caller_is_admin(request):
        raise web.HTTPForbidden(text="this route needs the admin role")
    agent: Agent = request.app[AGENT]  # type: ignore[assignment]
    return web.json_response(agent.reload())


def add_routes(app: web.Application, agent: object) -> None:
    app[AGENT] = agent
    app.router.add_get("/v1/keyring", keyring_list)
    app.router.add_post("/v1/keyring", keyring_change)
    app.router.add_post("/v1/identity/revocations", revoke)
    app.router.add_post("/v1/reload", reload)
