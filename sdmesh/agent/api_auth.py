"""Securing the control API's TCP side: tokens, HTTPS, and what ``sdmesh join`` checks first.

Local control is the Unix socket (api_socket.py); over TCP, every request but the public
ones presents a token (api_access.py, api_tokens.py), loopback included. Once the API
listens beyond loopback it must also speak HTTPS, or tokens would cross the network in
clear: ``sdmesh join`` refuses an exposed ``api`` without ``tls-cert``/``tls-key`` unless
``api-insecure = true`` says so explicitly.

aiohttp is imported inside the functions that need it: ``sdmesh join`` checks this
configuration before it joins the mesh, and that must not pay for aiohttp's import.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdmesh.agent.config import AgentConfig, ConfigError

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from sdmesh.agent.api_tokens import TokenStore

#: Tokens shorter than this are easy to guess; ``sdmesh keygen --token`` makes 43 characters.
MIN_TOKEN_CHARS = 16


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


def api_token(config: AgentConfig) -> tuple[str | None, list[str]]:
    """The ``api-token-file`` token (an admin token; None without the setting) and warnings
    about its file."""
    return _configured_token(config)


def load_api_security(config: AgentConfig) -> ApiSecurity:
    """Everything about the API's security, checked at once so ``sdmesh join`` refuses a bad
    configuration before it joins the mesh; ConfigError names the settings at fault. An API
    other hosts can reach needs TLS (tokens would cross the network in clear otherwise),
    unless ``api-insecure`` says to serve it anyway."""
    token, warnings = _configured_token(config)
    context = server_ssl_context(config)
    if not config.api_trust_loopback:
        warnings.append(
            "api-trust-loopback no longer has an effect: loopback TCP clients always present "
            "a token (local control is the Unix socket); drop the setting"
        )
    if config.api_insecure:
        warnings.append(
            f"api-insecure: anyone who can connect to {config.api[0]}:{config.api[1]} "
            + ("is admin without a token" if token is None else "may send its token in clear")
            + " (trusted networks only)"
        )
    elif context is None and not is_loopback_host(config.api[0]):
        host, port = config.api
        raise ConfigError(
            f"api: {host}:{port} is reachable from other hosts but tls-cert is not set; set "
            "tls-cert and tls-key (tokens must not cross the network in clear), bind api to "
            "127.0.0.1, or set api-insecure = true to serve the API that way anyway"
        )
    return ApiSecurity(token, context, tuple(warnings))


def socket_path(config: AgentConfig) -> Path:
    """Where the control socket is: ``api-socket``, else ``<state-dir>/api.sock`` (one per
    agent, so several agents on one machine never share one)."""
    return config.api_socket or config.state_dir / "api.sock"


def token_store(config: AgentConfig) -> TokenStore:
    """The agent's tokens: ``<state-dir>/api-tokens.json`` and the ``api-token-file`` token;
    ConfigError if either cannot be read."""
    from sdmesh.agent.api_tokens import STORE_NAME, TokenStore

    token, _ = _configured_token(config)
    try:
        return TokenStore(config.state_dir / STORE_NAME, token)
    except ValueError as error:
        raise ConfigError(f"api tokens: {error}") from None


def install_access(app: web.Application, config: AgentConfig) -> TokenStore:
    """Guard ``app`` as ``config`` says (the guard first, before any other middleware sees the
    request); the token store it checks tokens against. ConfigError as ``token_store``."""
    from sdmesh.agent.api_access import Access, access_middleware
    from sdmesh.trust.roles import Role

    tokens = token_store(config)
    groups = {name: Role.parse(role) for name, role in config.api_socket_roles}
    access = Access(tokens, groups, anonymous_tcp=config.api_insecure)
    app.middlewares.insert(0, access_middleware(access))
    return tokens


__all__ = [
    "ApiSecurity",
    "api_token",
    "install_access",
    "is_loopback_host",
    "load_api_security",
    "new_token",
    "read_token_file",
    "server_ssl_context",
    "socket_path",
    "token_store",
]
