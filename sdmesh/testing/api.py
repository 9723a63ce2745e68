"""Talking to an agent under test now that loopback TCP is no credential.

Tests give their agents an ``api-token-file`` (an admin token) and send it, or talk over the
agent's Unix socket (``<state-dir>/api.sock``; the tests run as the agent's user, so they are
``admin`` there), over the CLI's own HTTP-over-socket connection.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdmesh.cli.transport import UnixHTTPConnection

if TYPE_CHECKING:
    from sdmesh.agent.config import AgentConfig

TOKEN_FILE = "api.token"


def make_token_file(directory: Path) -> tuple[Path, str]:
    """A fresh admin token in ``directory/api.token`` (0600): its path and the token."""
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path = directory / TOKEN_FILE
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return path, token


def secured_config(directory: Path, name: str = "n0") -> tuple[AgentConfig, str]:
    """An agent config whose state lives in ``directory`` and whose ``api-token-file`` holds
    a fresh admin token; the token. For the API's in-process tests (aiohttp's TestClient)."""
    from sdmesh.agent.config import AgentConfig

    path, token = make_token_file(directory)
    return AgentConfig(name=name, state_dir=directory, api_token_file=str(path)), token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def socket_call(
    path: str | Path, method: str, route: str, body: object = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """One request over the agent's socket: (status, decoded JSON or text)."""
    connection = UnixHTTPConnection(str(path), timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        connection.request(method, route, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode(errors="replace")


__all__ = ["UnixHTTPConnection", "bearer", "make_token_file", "secured_config", "socket_call"]


def trusted_operator_env(directory: Path, name: str = "test-admin") -> dict[str, str]:
    """An operator key trusted as admin in a fresh trust store under ``directory``, as the
    ``SDMESH_*`` settings that make an agent trust it and sign unsigned API submissions with
    it (``operators-dir``, ``api-signing-key``): for test meshes and benches, whose agents
    must run what they are given (docs/security.md)."""
    from sdmesh.safeio import write_private
    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.store import trust_operator

    key = OperatorKey.generate(name)
    key_file = directory / f"{name}.key"
    write_private(key_file, key.file_text().encode(), 0o600)
    trusted = directory / "operators.d"
    trusted.mkdir(mode=0o700)
    trust_operator(trusted, key.public, Role.ADMIN, "a test operator")
    return {"SDMESH_OPERATORS_DIR": str(trusted), "SDMESH_API_SIGNING_KEY": str(key_file)}


def free_port(pair: bool = False) -> int:
    """A port free for UDP and TCP on loopback (an agent binds its gossip port for both);
    with ``pair``, one whose successor is free for UDP too (the DHT's port). Another process
    may still take it before the agent binds: callers retry on new ports.

    The port lies below the kernel's ephemeral range: a client that connects again and again
    to an ephemeral port nobody listens on (an agent that refused to start) can be handed that
    same port as its source and connect to itself, reading its own request as the reply."""
    import random
    import socket

    low, high = _ephemeral_range()
    start, stop = (10000, low - 1) if low > 11000 else (high + 1, 65534)
    while True:
        port = random.randrange(start, stop)
        wanted = [(socket.SOCK_DGRAM, port), (socket.SOCK_STREAM, port)]
        wanted += [(socket.SOCK_DGRAM, port + 1)] if pair else []
        try:
            for kind, number in wanted:
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", number))
            return port
        except OSError:
            continue


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for source ports (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999
