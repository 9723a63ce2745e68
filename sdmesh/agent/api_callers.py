"""Routes about callers: ``GET /v1/whoami``, the token routes, and the token proof.

``/v1/whoami`` tells a client (the dashboard) who it is and what its role allows, so it
offers only what will work. ``/v1/tokens`` (admin) creates, lists and revokes tokens;
``/v1/auth/proof`` answers a client's challenge (api_tokens.py says why).
"""

from __future__ import annotations

from aiohttp import web

from sdmesh.agent.api_access import allowed_actions, caller_of, note_target
from sdmesh.agent.api_input import BadInput, json_object
from sdmesh.agent.api_tokens import TokenError, TokenStore, endpoint_label, proof
from sdmesh.trust.roles import ROLE_NAMES, Role

TOKENS_KEY = web.AppKey("sdmesh_tokens", TokenStore)


async def whoami(request: web.Request) -> web.Response:
    caller = caller_of(request)
    return web.json_response(
        {
            "name": caller.name,
            "role": caller.role.label,
            "via": caller.via,
            "actions": allowed_actions(caller.role),
        }
    )


async def list_tokens(request: web.Request) -> web.Response:
    return web.json_response([e.to_json() for e in request.app[TOKENS_KEY].entries()])


async def create_token(request: web.Request) -> web.Response:
    """``{"name": NAME, "role": "read"|"operate"|"admin"}``: the secret is in the answer,
    once; the agent keeps its digest only."""
    try:
        body = await json_object(request)
    except BadInput as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    name, role = body.get("name"), body.get("role", "read")
    if not isinstance(name, str):
        raise web.HTTPBadRequest(text="'name' must be the token's name")
    note_target(request, token=name)
    if not isinstance(role, str) or role.strip().lower() not in ROLE_NAMES:
        raise web.HTTPBadRequest(text=f"'role' must be one of {', '.join(ROLE_NAMES)}")
    try:
        entry, secret = request.app[TOKENS_KEY].create(name, Role.parse(role))
    except TokenError as error:
        raise _token_error(error) from None
    except OSError as error:
        raise web.HTTPServiceUnavailable(
            text=f"cannot save the token store: {error.strerror or 'write failed'}"
        ) from None
    return web.json_response({**entry.to_json(), "token": secret}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    try:
        entry = request.app[TOKENS_KEY].revoke(request.match_info["name"])
    except TokenError as error:
        raise _token_error(error) from None
    except OSError as error:
        raise web.HTTPServiceUnavailable(
            text=f"cannot save the token store: {error.strerror or 'write failed'}"
        ) from None
    return web.json_response({**entry.to_json(), "revoked": True})


def _token_error(error: TokenError) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {404: web.HTTPNotFound, 409: web.HTTPConflict}
    return kinds.get(error.status, web.HTTPBadRequest)(text=str(error))


async def auth_proof(request: web.Request) -> web.Response:
    """``{"id": TOKEN_ID, "nonce": HEX}`` -> ``{"proof": HEX}`` over this connection's local
    address (never one the client names)."""
    try:
        body = await json_object(request)
    except BadInput as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    handle, nonce = body.get("id"), body.get("nonce")
    if not isinstance(handle, str) or not isinstance(nonce, str):
        raise web.HTTPBadRequest(text="'id' and 'nonce' must be strings")
    if not 32 <= len(nonce) <= 128 or len(handle) > 64:
        raise web.HTTPBadRequest(text="'nonce' must be 32 to 128 characters, 'id' at most 64")
    entry = request.app[TOKENS_KEY].by_id(handle)
    if entry is None:
        raise web.HTTPNotFound(text="this agent holds no token with that id")
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return web.json_response({"proof": proof(entry.sha256, nonce, endpoint_label(local))})


def add_routes(app: web.Application, tokens: TokenStore) -> None:
    app[TOKENS_KEY] = tokens
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_get("/v1/tokens", list_tokens)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_delete("/v1/tokens/{name}", revoke_token)
    app.router.add_post("/v1/auth/proof", auth_proof)


__all__ = ["TOKENS_KEY", "add_routes"]
