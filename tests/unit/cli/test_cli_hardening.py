"""The CLI against odd or hostile agents and inputs: exit codes and messages (cli.md), no
token over plain http to another host, pool names checked and quoted, peers' text never
read as markup, error bodies shown as messages, and log lines that cannot be forged."""

from __future__ import annotations

import io
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli import follow as follow_module
from sdmesh.cli.client import error_message
from sdmesh.cli.logs import JournalFormatter, TextFormatter
from sdmesh.cli.main import cli

from .fake_agent import FakeAgent, Routes, pool_status, statuses

TOKEN = "s3cret-token-0123456789abcdefghij"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(follow_module, "GRACE_SECONDS", 0.5)
    for name in ("SDMESH_TOKEN", "SDMESH_TOKEN_FILE", "SDMESH_INSECURE_TOKEN", "SDMESH_AGENT"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    # Never an internal error: every failure is a SystemExit with cli.md's code.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result


# ----------------------------------------------------------- token over http (item 5)
def test_a_token_is_not_sent_over_plain_http_to_another_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[urllib.request.Request] = []
    proofs: list[str] = []

    def urlopen(request: urllib.request.Request, **_: Any) -> Any:
        sent.append(request)
        raise urllib.error.URLError("no route to host")

    def with_proof(request: urllib.request.Request, token: str, timeout: float) -> Any:
        proofs.append(request.full_url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr("sdmesh.cli.transport.with_proof", with_proof)
    remote = "http://10.0.0.5:7948"
    refused = run("status", "--agent", remote, "--token", TOKEN)
    assert refused.exit_code == 2 and sent == [] and proofs == []
    assert "refusing to send the API token to http://10.0.0.5:7948" in refused.output
    assert "https://" in refused.output and "--insecure-token" in refused.output
    for allowed in (
        run("status", "--agent", remote, "--token", TOKEN, "--insecure-token"),
        run("peers", "--agent", remote, env={"SDMESH_TOKEN": TOKEN, "SDMESH_INSECURE_TOKEN": "1"}),
    ):
        assert allowed.exit_code == 1 and "cannot reach the agent" in allowed.output
    # Even then, the token waits for the agent's proof: nothing went out with it.
    assert len(proofs) == 2 and sent == []
    # No token: nothing to refuse.
    assert run("status", "--agent", remote).exit_code == 1
    assert len(sent) == 1 and sent[0].get_header("Authorization") is None


def test_a_token_goes_to_a_loopback_agent_over_http_after_its_proof() -> None:
    with FakeAgent({("GET", "/v1/pools"): lambda _: (200, [])}, tokens=(TOKEN,)) as fake:
        result = run("status", "--agent", fake.url, "--token", TOKEN)
    assert result.exit_code == 0 and result.output.strip() == "no pools"
    assert fake.authorization == [None, f"Bearer {TOKEN}"]


def test_a_squatter_on_the_port_never_receives_the_token() -> None:
    """Something else holds the agent's port (the agent is down): it cannot prove it holds
    the token, so the CLI stops before sending it (exit 2, and says why)."""
    with FakeAgent({("GET", "/v1/pools"): lambda _: (200, [])}) as squatter:
        result = run("status", "--agent", squatter.url, "--token", TOKEN)
    assert result.exit_code == 2
    assert "did not prove" in result.output and "the token was not sent" in result.output
    assert [r[1] for r in squatter.requests] == ["/v1/auth/proof"]
    assert squatter.authorization == [None]
    assert all(TOKEN not in str(body) for _, _, body in squatter.requests)


def test_a_squatter_that_answers_with_a_made_up_proof_never_receives_the_token() -> None:
    lie = {("POST", "/v1/auth/proof"): lambda _: (200, {"proof": "00" * 32})}
    with FakeAgent(lie) as squatter:
        result = run("status", "--agent", squatter.url, "--token", TOKEN)
    assert result.exit_code == 1 and "did not prove" in result.output
    assert squatter.authorization == [None]


def test_a_proof_for_another_address_is_refused() -> None:
    """A squatter relaying the question to the real agent elsewhere gets a proof bound to
    that agent's own address, not to the one the CLI reached."""
    routes: Routes = {("GET", "/v1/pools"): lambda _: (200, [])}
    with FakeAgent(routes, tokens=(TOKEN,), proves_for="127.0.0.1:7948") as relay:
        result = run("status", "--agent", relay.url, "--token", TOKEN)
    assert result.exit_code == 1 and "did not prove" in result.output
    assert relay.authorization == [None]


# --------------------------------------------------------------- exit codes (item 7)
@pytest.fixture
def not_http() -> Iterator[str]:
    """A TCP server that answers anything with a line that is not HTTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("command", [["status"], ["peers"], ["leave"], ["events"]])
def test_a_server_that_is_not_an_agent_is_exit_1_with_the_url(
    not_http: str, command: list[str]
) -> None:
    result = run(*command, "--agent", not_http)
    assert result.exit_code == 1
    assert not_http in result.output
    assert "not an sdmesh agent" in result.output or "cannot reach" in result.output


def test_an_invalid_url_is_exit_1_with_the_url() -> None:
    result = run("status", "--agent", "http://127.0.0.1:79x8")
    assert result.exit_code == 1
    assert "http://127.0.0.1:79x8" in result.output


@pytest.mark.parametrize("name", ["../v1/peers", "a/b", "p?x=1", "UPPER", "-x", "é"])
@pytest.mark.parametrize("command", ["status", "terminate"])
def test_pool_names_are_checked_before_anything_is_sent(command: str, name: str) -> None:
    with FakeAgent({}) as fake:
        result = run(command, "--agent", fake.url, "--", name)
    assert result.exit_code == 2, result.output
    assert "bad pool name" in result.output
    assert fake.requests == []


def test_pool_paths_are_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert follow_module.pool_path("web.1_a-b") == "/v1/pools/web.1_a-b"
    assert follow_module.pool_path("a/b?c") == "/v1/pools/a%2Fb%3Fc"


# ----------------------------------------------------------- terminate --wait (item 8)
@pytest.mark.parametrize("as_json", [False, True])
def test_terminate_wait_exits_1_when_the_pool_ends_failed(as_json: bool) -> None:
    failed = pool_status("p", "failed", ("sfConfig:vm", "h2", "failed"))
    failed["reason"] = "h2 could not destroy sdm-p-vm"
    routes = {
        ("DELETE", "/v1/pools/p"): lambda _: (202, {"pool": "p", "state": "terminating"}),
        ("GET", "/v1/pools/p"): statuses(
            pool_status("p", "terminating", ("sfConfig:vm", "h2", "terminating")), failed
        ),
    }
    with FakeAgent(routes) as fake:
        result = run(
            "terminate", "p", "--wait", *(["--json"] if as_json else []), "--agent", fake.url
        )
    assert result.exit_code == 1
    assert "failed" in result.output and "could not destroy" in result.output


def test_terminate_wait_exits_0_when_the_pool_is_terminated() -> None:
    routes = {
        ("DELETE", "/v1/pools/p"): lambda _: (202, {"pool": "p", "state": "terminating"}),
        ("GET", "/v1/pools/p"): statuses(
            pool_status("p", "terminated", ("sfConfig:vm", "h2", "terminated"))
        ),
    }
    with FakeAgent(routes) as fake:
        assert run("terminate", "p", "--wait", "--agent", fake.url).exit_code == 0


# ------------------------------------------------------- peers and leave (items 9, 12)
def test_peers_and_leave_report_errors_as_the_other_commands_do() -> None:
    routes: Routes = {
        ("GET", "/v1/peers"): lambda _: (403, {"error": "refused: a browser request"}),
        ("POST", "/v1/leave"): lambda _: (503, "the agent is still starting; try again"),
    }
    with FakeAgent(routes) as fake:
        peers = run("peers", "--agent", fake.url)
        leave = run("leave", "--agent", fake.url)
    assert peers.exit_code == 2
    assert peers.output.strip() == "sdmesh: error: refused: a browser request"
    assert leave.exit_code == 1
    assert leave.output.strip() == "sdmesh: error: the agent is still starting; try again"


def test_an_html_error_page_is_one_short_line() -> None:
    page = (
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>"
        + "<p>nginx</p>\n" * 500
        + "</body></html>"
    )
    with FakeAgent({("GET", "/v1/peers"): lambda _: (502, page)}) as fake:
        result = run("peers", "--agent", fake.url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 200
    assert "502 Bad Gateway" in lines[0] and "HTML page" in lines[0]


def test_error_messages_keep_the_agents_own_text() -> None:
    diagnostics = "the descriptor does not resolve:\nx.sf:1:2: error: bad\n  line\n  ^"
    assert error_message(diagnostics.encode(), 400, "Bad Request") == diagnostics
    assert error_message(b'{"error": "no"}', 401, "Unauthorized") == "no"
    assert error_message(b"", 500, "Internal Server Error") == "HTTP 500 Internal Server Error"


def test_a_413_says_the_request_is_too_large() -> None:
    with FakeAgent({("GET", "/v1/pools"): lambda _: (413, "Maximum request body size")}) as fake:
        result = run("status", "--agent", fake.url)
    assert result.exit_code == 2
    assert "too large (413)" in result.output and "4 MiB" in result.output


def test_peers_shows_member_text_literally() -> None:
    members = [
        {
            "name": "[bold red]h1[/]",
            "address": "10.0.0.1:7946",
            "state": "alive",
            "incarnation": 1,
            "meta": {"capacity": {"vcpus": 4, "memory_mib": 8192}, "labels": ["[link=x]gpu"]},
        }
    ]
    with FakeAgent({("GET", "/v1/peers"): lambda _: (200, members)}) as fake:
        result = run("peers", "--agent", fake.url)
    assert result.exit_code == 0
    assert "[bold red]h1[/]" in result.output and "[link=x]gpu" in result.output


# ---------------------------------------------------------------------- logs (item 13)
def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("sdmesh.pools", logging.WARNING, __file__, 1, message, args, None)


@pytest.mark.parametrize("formatter", [TextFormatter(), JournalFormatter()])
def test_a_message_cannot_forge_log_lines(formatter: logging.Formatter) -> None:
    forged = "pool x\n2026-01-01 00:00:00.000 CRITICAL sdmesh.agent: pwned\r<0>x"
    line = formatter.format(record("failed: %s", forged))
    assert "\n" not in line and "\r" not in line
    assert "pool x\\n2026-01-01" in line and "\\r<0>x" in line


def test_a_traceback_still_follows_on_lines_of_its_own() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys

        entry = record("it failed")
        entry.exc_info = sys.exc_info()
    stream = io.StringIO()
    stream.write(TextFormatter().format(entry))
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("it failed") and lines[1].startswith("Traceback")


@pytest.mark.parametrize("url", ["notaurl", "ftp://host:7948", "http://"])
def test_an_agent_url_that_is_not_http_is_bad_input(url: str) -> None:
    result = run("status", "--agent", url)
    assert result.exit_code == 2, result.output
    assert "expected http://HOST:PORT" in result.output
