"""Who may call which route: callers, their roles, the guard in front of every route.

A caller comes over the Unix socket (who it is: the kernel's SO_PEERCRED; its role: root and
the agent's user ``admin``, the configured groups their role) or over TCP with a token (its
role is the token's). Loopback TCP is no credential: any local user can connect to it, and
a process squatting the port while the agent is down could pose as the agent. Without a
token, TCP serves the public files only (the dashboard's page, the OpenAPI description);
``api-insecure`` opens it to anyone, as an ``anonymous`` admin, for trusted networks only.

Every matched route needs a role (``ROUTE_ROLES``; a route missing from the table needs
``admin``: deny by default). A refusal is a 403 naming the role needed. Every request that
is not a GET (refused ones too) leaves one line in the audit log (sdmesh/agent/audit.py).
"""

from __future__ import annotations

import pwd
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from sdmesh.agent.api_socket import peer_credentials, socket_role
from sdmesh.agent.api_tokens import TokenStore
from sdmesh.agent.audit import audit, should_audit
from sdmesh.trust.roles import Role

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware

#: Routes anyone may GET: the dashboard's files, the API's description; and the proof a
#: client asks for before it sends its token (it needs none: see api_tokens.py).
PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/"),
        ("GET", "/ui"),
        ("GET", "/ui/"),
        ("GET", "/ui/{file}"),
        ("GET", "/v1/openapi.yaml"),
        ("POST", "/v1/auth/proof"),
    }
)
#: (method, route) -> the role it needs. A route not listed needs ``admin``.
ROUTE_ROLES: Mapping[tuple[str, str], Role] = {
    ("GET", "/v1/whoami"): Role.READ,
    ("GET", "/v1/health"): Role.READ,
    ("GET", "/v1/peers"): Role.READ,
    ("GET", "/v1/pools"): Role.READ,
    ("GET", "/v1/pools/{pool}"): Role.READ,
    ("GET", "/v1/events"): Role.READ,
    ("GET", "/metrics"): Role.READ,
    ("GET", "/v1/templates"): Role.READ,
    ("GET", "/v1/templates/{name}"): Role.READ,
    ("POST", "/v1/pools"): Role.OPERATE,
    ("DELETE", "/v1/pools/{pool}"): Role.OPERATE,
    ("GET", "/v1/pools/{pool}/termination"): Role.OPERATE,  # what terminate --key signs
    ("POST", "/v1/templates/{name}"): Role.OPERATE,
    ("POST", "/v1/leave"): Role.ADMIN,
    ("POST", "/v1/peers/{name}/force-leave"): Role.ADMIN,
    ("GET", "/v1/dht/{key}"): Role.ADMIN,
    ("PUT", "/v1/dht/{key}"): Role.ADMIN,
    ("GET", "/v1/tokens"): Role.ADMIN,
    ("POST", "/v1/tokens"): Role.ADMIN,
    ("DELETE", "/v1/tokens/{name}"): Role.ADMIN,
    ("GET", "/v1/keyring"): Role.ADMIN,
    ("POST", "/v1/keyring"): Role.ADMIN,
    ("POST", "/v1/identity/revocations"): Role.ADMIN,
    ("POST", "/v1/reload"): Role.ADMIN,
}
#: What the dashboard may offer, by the route each action uses.
ACTIONS: Mapping[str, tuple[str, str]] = {
    "submit": ("POST", "/v1/pools"),
    "terminate": ("DELETE", "/v1/pools/{pool}"),
    "templates": ("POST", "/v1/templates/{name}"),
    "leave": ("POST", "/v1/leave"),
    "force_leave": ("POST", "/v1/peers/{name}/force-leave"),
    "tokens": ("POST", "/v1/tokens"),
}
#: The query parameter that may carry the token: browsers' EventSource cannot set headers.
TOKEN_QUERY = "access_token"
#: The only route that takes the token from the query: a token in a URL lands in proxy logs
#: and browser history, so no request that changes anything may carry it there.
QUERY_TOKEN_ROUTES = frozenset({("GET", "/v1/events")})


@dataclass(frozen=True)
class Caller:
    """Who made a request: ``uid:0(root)``, ``token:ci``, ``anonymous``; and its role."""

    name: str
    role: Role
    via: str  # "socket" or "tcp"
    peer: str


CALLER_KEY = web.RequestKey("sdmesh_caller", Caller)
AUDIT_TARGET_KEY = web.RequestKey("sdmesh_audit_target", dict[str, str])


def route_of(request: web.Request) -> tuple[str, str] | None:
    """(method, route pattern) of the matched route; None when no route matched. HEAD is
    GET. Decided on the route, never on the raw path: no spelling reaches another route."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def needed_role(route: tuple[str, str] | None) -> Role:
    """The role a route needs: unmatched requests (404, 405) need only to be identified."""
    if route is None:
        return Role.READ
    return ROUTE_ROLES.get(route, Role.ADMIN)


def allowed_actions(role: Role) -> dict[str, bool]:
    return {action: role.allows(needed_role(route)) for action, route in ACTIONS.items()}


def caller_of(request: web.Request) -> Caller:
    """The caller the guard identified (routes behind the guard only)."""
    caller = request.get(CALLER_KEY)
    assert isinstance(caller, Caller)
    return caller


def note_target(request: web.Request, **target: str) -> None:
    """What a request acted on (a pool, a member), for its audit line."""
    request.setdefault(AUDIT_TARGET_KEY, {}).update(target)


def _is_unix(request: web.BaseRequest) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family == socket.AF_UNIX


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "?"


def presented_token(request: web.Request) -> str | None:
    """From ``Authorization: Bearer``, else ``?access_token=`` on QUERY_TOKEN_ROUTES only."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if route_of(request) in QUERY_TOKEN_ROUTES:
        return request.query.get(TOKEN_QUERY) or None
    return None


@dataclass(frozen=True)
class Access:
    """How this agent identifies callers."""

    tokens: TokenStore
    socket_groups: Mapping[str, Role]
    anonymous_tcp: bool = False
    """``api-insecure``: TCP callers are an anonymous admin while the agent holds no token
    (decided at each request: a token created or reloaded later ends it at once)."""

    def identify(self, request: web.Request) -> Caller | web.Response:
        """The caller, or the 401/403 answer that refuses it."""
        if _is_unix(request):
            sock = request.transport.get_extra_info("socket") if request.transport else None
            credentials = peer_credentials(sock) if sock is not None else None
            if credentials is None:
                return _refuse(403, "permission denied: the kernel did not say who you are")
            name = f"uid:{credentials.uid}({_user_name(credentials.uid)})"
            role = socket_role(credentials, self.socket_groups)
            if role is None:
                return _refuse(403, f"permission denied: {name} is in no group given a role")
            return Caller(name, role, "socket", f"pid:{credentials.pid}")
        peer = request.remote or "?"
        token = presented_token(request)
        if token is None:
            if self.anonymous_tcp and len(self.tokens) == 0:
                return Caller("anonymous", Role.ADMIN, "tcp", peer)
            message = "this API needs a token: Authorization: Bearer <token>"
            if TOKEN_QUERY in request.query:
                message += f" (?{TOKEN_QUERY}= is accepted by GET /v1/events only)"
            return _unauthorized(message, None)
        entry = self.tokens.lookup(token)
        if entry is None:
            return _unauthorized("the token is not valid", "invalid_token")
        return Caller(f"token:{entry.name}", entry.role, "tcp", peer)


def _refuse(status: int, message: str, needed: Role | None = None) -> web.Response:
    body: dict[str, str] = {"error": message}
    if needed is not None:
        body["needed"] = needed.label
    return web.json_response(body, status=status)


def _unauthorized(message: str, error: str | None) -> web.Response:
    challenge = 'Bearer realm="sdmesh"' + (f', error="{error}"' if error else "")
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def access_middleware(access: Access) -> Middleware:
    """Identify, authorize, then audit every request but the public ones."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route in PUBLIC_ROUTES:
            return await handler(request)
        identified = access.identify(request)
        needed = needed_role(route)
        if isinstance(identified, web.Response):
            _audit(request, route, identified.status, None, needed)
            return identified
        caller = identified
        if not caller.role.allows(needed):
            refusal = _refuse(
                403,
                f"{request.method} {route[1] if route else request.path} needs the "
                f"{needed.label} role; {caller.name} has {caller.role.label}",
                needed,
            )
            _audit(request, route, 403, caller, needed)
            return refusal
        request[CALLER_KEY] = caller
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            _audit(request, route, status, caller, needed)

    return guard


def _audit(
    request: web.Request,
    route: tuple[str, str] | None,
    status: int,
    caller: Caller | None,
    needed: Role,
) -> None:
    if not should_audit(request.method):
        return
    target = dict(request.get(AUDIT_TARGET_KEY, {}))
    pattern = route[1] if route else ""
    named = (
        "token" if "/tokens/" in pattern else "template" if "/templates/" in pattern else "member"
    )
    for key in ("pool", "name", "key"):
        if key in request.match_info:
            target.setdefault(named if key == "name" else key, request.match_info[key])
    audit(
        who=caller.name if caller else "unidentified",
        via=caller.via if caller else ("socket" if _is_unix(request) else "tcp"),
        peer=caller.peer if caller else (request.remote or "?"),
        method=request.method,
        route=route[1] if route else request.path,
        status=status,
        role=caller.role.label if caller else None,
        needed=needed.label,
        target=target,
    )


def check_role(request: web.Request, needed: Role, what: str) -> None:
    """403 naming the role ``what`` needs, if the caller's role is lower."""
    caller = caller_of(request)
    if not caller.role.allows(needed):
        raise web.HTTPForbidden(
            text=f"{what} needs the {needed.label} role; {caller.name} has {caller.role.label}"
        )


__all__ = [
    "ACTIONS",
    "ROUTE_ROLES",
    "Access",
    "Caller",
    "access_middleware",
    "allowed_actions",
    "caller_of",
    "check_role",
    "needed_role",
    "note_target",
    "route_of",
]
