"""Securing the control API: a bearer token for anything but loopback, and HTTPS.

The API can submit and terminate pools, so once it listens beyond loopback it must not be
open: ``sdmesh join`` refuses an exposed ``api`` without ``api-token-file`` and TLS
(``tls-cert``/``tls-key``) unless ``api-insecure = true`` says so explicitly. Loopback peers
need no token by default, so the local CLI keeps working with no setup (local users are
trusted as they are with the loopback-only default), except requests a browser sends on
behalf of another site (a cross-site ``Origin``, or a rebound DNS name as ``Host``): any web
page could otherwise submit pools through the operator's browser. ``api-trust-loopback =
false`` takes loopback's pass away altogether, for hosts where loopback is not only local
users (a reverse proxy or an ``ssh -L`` tunnel on the host connects from loopback on a remote
client's behalf); the CLI then finds the token through the agent's config file
(sdmesh/cli/agent_client.py). The dashboard's static files and the OpenAPI description stay
public: they hold no state, and the dashboard needs them to ask for the token.

aiohttp is imported inside the functions that need it: ``sdmesh join`` checks this
configuration before it joins the mesh, and that must not pay for aiohttp's import.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdmesh.agent.config import AgentConfig, ConfigError

if TYPE_CHECKING:
    import ssl

    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware

#: The query parameter that may carry the token: browsers' EventSource cannot set headers.
TOKEN_QUERY = "access_token"
#: The only (method, route) that takes the token from the query: a token in a URL lands in
#: proxy logs and browser history, so no request that changes anything may carry it there.
QUERY_TOKEN_ROUTES = frozenset({("GET", "/v1/events")})
#: Tokens shorter than this are easy to guess; ``sdmesh keygen --token`` makes 43 characters.
MIN_TOKEN_CHARS = 16
#: Resources anyone may GET: the dashboard's files and the API's description.
PUBLIC_PATHS = frozenset({"/", "/ui", "/v1/openapi.yaml"})
PUBLIC_PREFIXES = ("/ui/",)


@dataclass(frozen=True)
class ApiSecurity:
    """What ``sdmesh join`` checked before starting: the token, TLS, and what to warn about."""

    token: str | None
    ssl_context: ssl.SSLContext | None
    warnings: tuple[str, ...]


def is_loopback_host(host: str) -> bool:
    """Whether a configured ``api`` host accepts loopback connections only. Names other than
    ``localhost`` count as exposed: what they resolve to can change under us."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return _loopback(address)


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def new_token() -> str:
    """A fresh token: 32 random bytes as URL-safe base64 (43 characters, safe in a header
    and in a query string alike)."""
    import secrets

    return secrets.token_urlsafe(32)


def read_token_file(path: str, setting: str = "api-token-file") -> tuple[str, list[str]]:
    """The token in ``path`` and warnings about the file; ConfigError naming ``setting`` if it
    is missing, unreadable or holds no usable token. Blank and ``#`` lines are ignored."""
    warnings: list[str] = []
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}: {path} does not exist (make one with `sdmesh keygen --token {path}`)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: {path} is not a text file") from None
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror or error}") from None
    lines = [line.strip() for line in text.splitlines()]
    tokens = [line for line in lines if line and not line.startswith("#")]
    if not tokens:
        raise ConfigError(f"{setting}: {path} is empty; it must hold the API token")
    if len(tokens) > 1:
        raise ConfigError(f"{setting}: {path} must hold one token line, not {len(tokens)}")
    token = tokens[0]
    if not all(33 <= ord(char) <= 126 for char in token):
        raise ConfigError(
            f"{setting}: the token in {path} must be printable ASCII without spaces "
            "(it travels in an HTTP header)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        warnings.append(
            f"{setting}: the token in {path} has only {len(token)} characters, which is easy "
            "to guess; make a new one with `sdmesh keygen --token FILE`"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"{setting}: {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
        )
    return token, warnings


def server_ssl_context(config: AgentConfig) -> ssl.SSLContext | None:
    """The API's TLS context from ``tls-cert``/``tls-key``, or None to serve plain HTTP."""
    if not config.tls_cert and not config.tls_key:
        return None
    if not config.tls_cert or not config.tls_key:
        given, missing = ("tls-cert", "tls-key") if config.tls_cert else ("tls-key", "tls-cert")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both PEM files")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for setting, path in (("tls-cert", config.tls_cert), ("tls-key", config.tls_key)):
        if not os.path.isfile(path):
            raise ConfigError(f"{setting}: {path} does not exist or is not a file")
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as error:
        raise ConfigError(
            f"tls-cert/tls-key: cannot load {config.tls_cert} with {config.tls_key} "
            f"({error.reason or error}): both must be PEM, the key must match the certificate"
        ) from None
    except OSError as error:
        raise ConfigError(f"tls-cert/tls-key: {error.strerror or error}") from None
    return context


def _configured_token(config: AgentConfig) -> tuple[str | None, list[str]]:
    if not config.api_token_file:
        return None, []
    token, warnings = read_token_file(config.api_token_file)
    return token, warnings


def _untrusted_loopback_without_token(config: AgentConfig, token: str | None) -> None:
    if token is None and not config.api_trust_loopback:
        raise ConfigError(
            "api-trust-loopback = false makes loopback clients present the token, but "
            "api-token-file is not set; set it (`sdmesh keygen --token FILE`) or drop "
            "api-trust-loopback"
        )


def api_token(config: AgentConfig) -> tuple[str | None, list[str]]:
    """The configured token (None without ``api-token-file``) and warnings about its file;
    ConfigError if an exposed API would have no token and ``api-insecure`` is not set, or if
    ``api-trust-loopback = false`` would leave loopback clients no token to present."""
    token, warnings = _configured_token(config)
    _untrusted_loopback_without_token(config, token)
    if token is None and not config.api_insecure and not is_loopback_host(config.api[0]):
        host, port = config.api
        raise ConfigError(
            f"api: {host}:{port} is reachable from other hosts but api-token-file is not set; "
            "set it (the token: `sdmesh keygen --token FILE`), bind api to 127.0.0.1, or set "
            "api-insecure = true to serve the API to anyone who can reach it"
        )
    return token, warnings


def load_api_security(config: AgentConfig) -> ApiSecurity:
    """Everything about the API's security, checked at once so ``sdmesh join`` refuses a bad
    configuration before it joins the mesh; ConfigError names the settings at fault."""
    token, warnings = _configured_token(config)
    _untrusted_loopback_without_token(config, token)
    context = server_ssl_context(config)
    if not is_loopback_host(config.api[0]):
        host, port = config.api
        missing = [
            name
            for name, absent in (("api-token-file", token is None), ("tls-cert", context is None))
            if absent
        ]
        if missing and not config.api_insecure:
            raise ConfigError(
                f"api: {host}:{port} is reachable from other hosts but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set; set "
                f"{'it' if len(missing) == 1 else 'them'} (a token: `sdmesh keygen --token "
                "FILE`; HTTPS: tls-cert and tls-key), bind api to 127.0.0.1, or set "
                "api-insecure = true to serve the API that way anyway"
            )
        if missing:
            without = " and no ".join("token" if m == "api-token-file" else "TLS" for m in missing)
            warnings.append(f"api-insecure: the API on {host}:{port} has no {without}")
    return ApiSecurity(token, context, tuple(warnings))


def peer_is_loopback(request: web.BaseRequest) -> bool:
    """Whether the connection itself comes from loopback (never a header a client sets)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False  # closed, or a kind of socket we do not know: ask for the token
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    return _loopback(address)


def is_public(request: web.Request) -> bool:
    """GET (or HEAD) of a public resource. Decided on the route the request matched, not on
    its raw path, so no spelling of a path (``/ui/../v1/pools``) reaches another route."""
    if request.method not in ("GET", "HEAD"):
        return False
    resource = request.match_info.route.resource
    if resource is None:  # no route matched (404, 405): not public
        return False
    path = resource.canonical
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_token(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer``, else from the ``access_token`` parameter
    on the routes of ``QUERY_TOKEN_ROUTES`` (the dashboard's EventSource) only."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if not _query_token_route(request):
        return None
    return request.query.get(TOKEN_QUERY) or None


def _query_token_route(request: web.Request) -> bool:
    """Decided on the route matched (as ``is_public``), not on the raw path."""
    method = "GET" if request.method == "HEAD" else request.method
    resource = request.match_info.route.resource
    return resource is not None and (method, resource.canonical) in QUERY_TOKEN_ROUTES


def token_matches(presented: str, token: str) -> bool:
    """Constant-time: how long a wrong token took to refuse says nothing about the right one."""
    return hmac.compare_digest(presented.encode(), token.encode())


def browser_guarded(request: web.BaseRequest) -> bool:
    """Whether a loopback request may have been sent by a browser for another site: its
    ``Origin`` is not this API (a cross-site POST needs no CORS preflight), or its ``Host``
    is a name other than localhost (DNS rebinding: a page whose name now resolves to
    127.0.0.1). Such requests do not get loopback's pass; the CLI sends neither."""
    from urllib.parse import urlsplit

    host = request.headers.get("Host")
    origin = request.headers.get("Origin")
    try:
        if host is not None:
            name = urlsplit("//" + host).hostname or ""
            if not (name == "localhost" or name.endswith(".localhost") or _is_ip(name)):
                return True
        return origin is not None and urlsplit(origin).netloc.lower() != (host or "").lower()
    except ValueError:  # a malformed Host or Origin: no browser sends one
        return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_local(request: web.BaseRequest) -> bool:
    """Loopback's pass: from loopback, and not sent by a browser on another site's behalf."""
    return peer_is_loopback(request) and not browser_guarded(request)


def auth_middleware(token: str | None, trust_loopback: bool = True) -> Middleware:
    """Every request that is neither public nor local must present ``token``; without a
    token (a loopback-only API, or ``api-insecure``), only browser-guarded requests from
    loopback are refused (403): that is what stops other sites' pages driving the API.
    ``trust_loopback=False`` (``api-trust-loopback = false``) gives loopback no pass: every
    request but the public ones presents ``token``."""
    from aiohttp import web

    if not trust_loopback and token is None:
        raise ValueError("trust_loopback=False needs a token")  # api_token refuses it first

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request) or (trust_loopback and is_local(request)):
            return await handler(request)
        if token is None:
            if peer_is_loopback(request):
                return web.json_response(
                    {"error": "refused: a browser request from another site"}, status=403
                )
            return await handler(request)  # api-insecure: anyone who can reach it
        presented = presented_token(request)
        if presented is None:
            message = "this API needs a token: Authorization: Bearer <token>"
            if TOKEN_QUERY in request.query:
                message += f" (?{TOKEN_QUERY}= is accepted by GET /v1/events only)"
            return _unauthorized(message, None)
        if not token_matches(presented, token):
            return _unauthorized("the token is not valid", "invalid_token")
        return await handler(request)

    return authenticate


def _unauthorized(message: str, error: str | None) -> web.Response:
    from aiohttp import web

    challenge = 'Bearer realm="sdmesh"' + (f', error="{error}"' if error else "")
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def install_auth(app: web.Application, config: AgentConfig) -> None:
    """Guard ``app`` as ``config`` says. The middleware goes first, before any other
    middleware sees the request. ConfigError as in ``api_token``."""
    token, _ = api_token(config)
    app.middlewares.insert(0, auth_middleware(token, config.api_trust_loopback))


__all__ = [
    "ApiSecurity",
    "api_token",
    "auth_middleware",
    "install_auth",
    "is_loopback_host",
    "load_api_security",
    "new_token",
    "read_token_file",
    "server_ssl_context",
]
