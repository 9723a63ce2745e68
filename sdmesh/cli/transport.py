"""How requests reach an agent: its Unix socket, or TCP with a token it proved it holds.

``--agent`` is ``unix:/PATH`` (the control socket: who you are is your uid, no token is ever
sent) or an ``http(s)://`` URL. The default is the socket of the agent on this host, so
``sudo sdmesh status`` works with no setup: ``api-socket`` or ``<state-dir>/api.sock`` of the
agent's config file (``SDMESH_CONFIG``, else /etc/sdmesh/sdmesh.toml), with the variables the
agent reads (``SDMESH_API_SOCKET``, ``SDMESH_STATE_DIR``) applied as it applies them.

A token goes over plain ``http://`` only after the agent proved it holds that token's digest
(``POST /v1/auth/proof`` on the same connection, sdmesh/agent/api_tokens.py): a program
squatting the port while the agent is down never receives it. Over ``https://`` the
certificate check authenticates the agent.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

#: The agent's config file (agents/sdmesh.service); ``SDMESH_CONFIG`` names another.
AGENT_CONFIG = "/etc/sdmesh/sdmesh.toml"
DEFAULT_STATE_DIR = "/var/lib/sdmesh"
UNIX_PREFIX = "unix:"
#: How requests to a socket are spelt inside the CLI: the path, quoted, as the host.
UNIX_SCHEME = "http+unix://"


def is_unix(agent: str) -> bool:
    return agent.startswith((UNIX_PREFIX, UNIX_SCHEME))


def unix_path(agent: str) -> str:
    """The socket path of ``unix:/PATH`` (``unix:///PATH`` too) or of a request URL."""
    if agent.startswith(UNIX_SCHEME):
        return unquote(agent[len(UNIX_SCHEME) :].split("/", 1)[0])
    path = agent[len(UNIX_PREFIX) :]
    if path.startswith("//"):
        path = path[2:]
    return path


def request_url(agent: str, path: str) -> str:
    """The URL of ``path`` on ``agent`` (``path`` starts with ``/``)."""
    if is_unix(agent):
        return UNIX_SCHEME + quote(unix_path(agent), safe="") + path
    return agent.rstrip("/") + path


def default_agent(environ: Mapping[str, str] | None = None) -> str:
    """``unix:`` and the local agent's socket (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    settings: dict[str, object] = {}
    try:
        with open(environ.get("SDMESH_CONFIG") or AGENT_CONFIG, "rb") as handle:
            settings = tomllib.load(handle)
    except (OSError, ValueError):
        pass
    socket_path = environ.get("SDMESH_API_SOCKET") or settings.get("api-socket")
    if not socket_path:
        state = environ.get("SDMESH_STATE_DIR") or settings.get("state-dir") or DEFAULT_STATE_DIR
        socket_path = str(Path(str(state)) / "api.sock")
    return UNIX_PREFIX + str(socket_path)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def send(connection: http.client.HTTPConnection, call: urllib.request.Request) -> Any:
    """``call`` on ``connection``: the response, or urllib's HTTPError for a 4xx/5xx (so
    callers handle answers as they do ``urlopen``'s)."""
    headers = {name: value for name, value in call.header_items()}
    connection.request(call.get_method(), call.selector, body=call.data, headers=headers)
    response = connection.getresponse()
    if response.status >= 400:
        raise urllib.error.HTTPError(
            call.full_url, response.status, response.reason, response.msg, response
        )
    return response


def over_socket(call: urllib.request.Request, timeout: float) -> Any:
    """``call`` over the agent's Unix socket; OSError as ``connect`` raises it."""
    return send(UnixHTTPConnection(unix_path(call.full_url), timeout), call)


class ProofFailed(Exception):
    """The endpoint did not prove it holds the token: the token was not sent."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def with_proof(call: urllib.request.Request, token: str, timeout: float) -> Any:
    """``call`` over plain http with ``token``, sent only once the agent proved, on this very
    connection, that it holds the token's digest for the address we reached."""
    import hmac

    from sdmesh.agent.api_tokens import digest, endpoint_label, proof, token_id

    parts = urlsplit(call.full_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    connection.connect()
    assert connection.sock is not None
    endpoint = endpoint_label(connection.sock.getpeername())
    nonce = secrets.token_hex(32)
    token_digest = digest(token)
    question = json.dumps({"id": token_id(token_digest), "nonce": nonce}).encode()
    connection.request(
        "POST", "/v1/auth/proof", body=question, headers={"Content-Type": "application/json"}
    )
    answer = connection.getresponse()
    raw = answer.read(4096)
    try:
        given = json.loads(raw).get("proof") if answer.status == 200 else None
    except (ValueError, AttributeError):
        given = None
    expected = proof(token_digest, nonce, endpoint)
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        connection.close()
        raise ProofFailed(endpoint, answer.status)
    if connection.sock is None:  # closed after the proof: a new connection is unproven
        raise ProofFailed(endpoint, None)
    call.add_unredirected_header("Authorization", f"Bearer {token}")
    return send(connection, call)


__all__ = [
    "AGENT_CONFIG",
    "ProofFailed",
    "UnixHTTPConnection",
    "default_agent",
    "is_unix",
    "over_socket",
    "request_url",
    "send",
    "unix_path",
    "with_proof",
]
