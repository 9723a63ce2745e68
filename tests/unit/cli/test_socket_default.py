"""The CLI's default is the local agent's socket; unix: agents; a socket it may not open is a
clear "permission denied"; ``sdmesh token`` create/list/revoke."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli import transport
from sdmesh.cli.main import cli

from .fake_agent import FakeAgent


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_the_default_agent_is_the_local_agents_socket(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.toml")
    assert transport.default_agent({"SDMESH_CONFIG": missing}) == "unix:/var/lib/sdmesh/api.sock"
    env = {"SDMESH_CONFIG": missing, "SDMESH_STATE_DIR": "/srv/sdmesh"}
    assert transport.default_agent(env) == "unix:/srv/sdmesh/api.sock"
    config = tmp_path / "sdmesh.toml"
    config.write_text('state-dir = "/data/sdmesh"\n')
    assert transport.default_agent({"SDMESH_CONFIG": str(config)}) == "unix:/data/sdmesh/api.sock"
    config.write_text('state-dir = "/data/sdmesh"\napi-socket = "/run/sdmesh/hv1.sock"\n')
    assert transport.default_agent({"SDMESH_CONFIG": str(config)}) == "unix:/run/sdmesh/hv1.sock"
    env = {"SDMESH_CONFIG": str(config), "SDMESH_API_SOCKET": "/x.sock"}
    assert transport.default_agent(env) == "unix:/x.sock"


def test_unix_agents_and_their_request_urls() -> None:
    for spelt in ("unix:/var/lib/sdmesh/api.sock", "unix:///var/lib/sdmesh/api.sock"):
        assert transport.is_unix(spelt)
        assert transport.unix_path(spelt) == "/var/lib/sdmesh/api.sock"
        url = transport.request_url(spelt, "/v1/pools/p?x=1")
        assert url.startswith("http+unix://%2Fvar%2Flib%2Fsdmesh%2Fapi.sock/v1/pools/p")
        assert transport.unix_path(url) == "/var/lib/sdmesh/api.sock"
    assert transport.request_url("http://h:1/", "/v1/pools") == "http://h:1/v1/pools"
    relative = run("status", "--agent", "unix:api.sock")
    assert relative.exit_code == 2 and "ABSOLUTE" in relative.output


def test_no_agent_on_the_socket_is_exit_1_naming_it(tmp_path: Path) -> None:
    result = run("status", "--agent", f"unix:{tmp_path / 'api.sock'}")
    assert result.exit_code == 1
    assert "no agent answers on" in result.output and "Traceback" not in result.output


def test_a_socket_this_user_may_not_open_is_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root opens any socket, so the refusal is the kernel's answer made up here; the real
    one (runuser -u nobody) is in tests/integration/agent/test_local_control.py."""

    def refuse(*_: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(transport, "over_socket", refuse)
    result = run("status", "--agent", f"unix:{tmp_path / 'api.sock'}")
    assert result.exit_code == 2
    assert result.output.startswith("sdmesh: error: permission denied:")
    assert "group" in result.output and len(result.output.strip().splitlines()) == 1


def test_the_socket_carries_requests_and_never_a_token(tmp_path: Path) -> None:
    """A stand-in agent on a socket: the request arrives, with no Authorization header even
    when a token is given (the socket's caller is known from the kernel)."""
    path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    import threading

    seen: list[bytes] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(65536))
            body = b"[]"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\n" + body
            )

    thread = threading.Thread(target=answer)
    thread.start()
    result = run("status", "--agent", f"unix:{path}", "--token", "t" * 43)
    thread.join(5)
    server.close()
    assert result.exit_code == 0 and result.output.strip() == "no pools", result.output
    assert seen and seen[0].startswith(b"GET /v1/pools HTTP/1.1")
    assert b"authorization" not in seen[0].lower()


def test_token_commands(tmp_path: Path) -> None:
    made: list[object] = []

    def create(body: object) -> tuple[int, object]:
        made.append(body)
        return 201, {"name": "ci", "role": "operate", "created": 1.0, "token": "s" * 43}

    routes = {
        ("POST", "/v1/tokens"): create,
        ("GET", "/v1/tokens"): lambda _: (200, [{"name": "ci", "role": "operate", "created": 0}]),
        ("DELETE", "/v1/tokens/ci"): lambda _: (200, {"name": "ci", "revoked": True}),
    }
    with FakeAgent(routes) as fake:
        printed = run("token", "create", "ci", "--role", "operate", "--agent", fake.url)
        assert printed.exit_code == 0 and printed.stdout.strip() == "s" * 43
        assert made == [{"name": "ci", "role": "operate"}]
        out = tmp_path / "ci.token"
        saved = run(
            "token", "create", "ci", "--role", "operate", "--out", str(out), "--agent", fake.url
        )
        assert saved.exit_code == 0 and "s" * 43 not in saved.output
        assert out.read_text().strip() == "s" * 43
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        again = run("token", "create", "ci", "--out", str(out), "--agent", fake.url)
        assert again.exit_code == 2 and "revoke it" in again.output
        listed = run("token", "list", "--json", "--agent", fake.url)
        assert json.loads(listed.stdout)[0]["name"] == "ci"
        assert run("token", "revoke", "ci", "--agent", fake.url).exit_code == 0
        bad = run("token", "create", "x", "--role", "root", "--agent", fake.url)
        assert bad.exit_code == 2
