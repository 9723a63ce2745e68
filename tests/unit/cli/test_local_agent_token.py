"""The CLI finds the local agent's token by itself for an http loopback --agent: through the
agent's config file (SDMESH_CONFIG here), for loopback URLs at its api port only, and only
when no token was given; it sends it only once the agent proved it holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli import agent_client
from sdmesh.cli.agent_client import local_agent_token
from sdmesh.cli.main import cli

from .fake_agent import FakeAgent, Routes

TOKEN = "local-token-0123456789abcdefghij"
OTHER = "given-token-0123456789abcdefghij"


@pytest.fixture(autouse=True)
def no_given_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SDMESH_TOKEN", "SDMESH_TOKEN_FILE", "SDMESH_INSECURE_TOKEN", "SDMESH_AGENT"):
        monkeypatch.delenv(name, raising=False)


def agent_config(tmp_path: Path, api: str | None, token: str | None = TOKEN) -> Path:
    """An agent config naming ``api`` and a token file (mode 0600) holding ``token``."""
    tmp_path.mkdir(exist_ok=True)
    token_path = tmp_path / "api.token"
    if token is not None:
        token_path.write_text(token + "\n")
        token_path.chmod(0o600)
    config = tmp_path / "sdmesh.toml"
    lines = [f'api-token-file = "{token_path}"']
    if api is not None:
        lines.append(f'api = "{api}"')
    config.write_text("\n".join(lines) + "\n")
    return config


def guarded(fake: list[FakeAgent]) -> Routes:
    """GET /v1/pools as an agent answers it over TCP (a token, loopback included)."""

    def pools(_: object) -> tuple[int, object]:
        if fake[0].authorization[-1] != f"Bearer {TOKEN}":
            return 401, {"error": "this API needs a token: Authorization: Bearer <token>"}
        return 200, []

    return {("GET", "/v1/pools"): pools}


def status(agent: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["status", "--agent", agent, *args])


def test_the_cli_sends_the_local_agents_token_from_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder: list[FakeAgent] = []
    with FakeAgent(guarded(holder), tokens=(TOKEN, OTHER)) as fake:
        holder.append(fake)
        port = fake.url.rsplit(":", 1)[1]
        monkeypatch.setenv("SDMESH_CONFIG", str(agent_config(tmp_path, f"127.0.0.1:{port}")))
        result = status(fake.url)
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "no pools"
        # The proof first (no token in it), then the request with the token.
        assert [r[1] for r in fake.requests] == ["/v1/auth/proof", "/v1/pools"]
        assert fake.authorization == [None, f"Bearer {TOKEN}"]
        # localhost is loopback too.
        assert status(f"http://localhost:{port}").exit_code == 0
        # A token given on the command line wins over the config's, and so does a file.
        given = status(fake.url, "--token", OTHER)
        assert given.exit_code == 2 and "a token was refused" in given.output
        assert fake.authorization[-1] == f"Bearer {OTHER}"
        other_file = tmp_path / "other.token"
        other_file.write_text(OTHER + "\n")
        other_file.chmod(0o600)
        assert status(fake.url, "--token-file", str(other_file)).exit_code == 2
        assert fake.authorization[-1] == f"Bearer {OTHER}"


def test_no_token_for_another_port_or_without_a_readable_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder: list[FakeAgent] = []
    with FakeAgent(guarded(holder)) as fake:
        holder.append(fake)
        # The config's api is another port (the default 7948 here): not this agent.
        monkeypatch.setenv("SDMESH_CONFIG", str(agent_config(tmp_path, None)))
        refused = status(fake.url)
        assert refused.exit_code == 2 and "a token is needed" in refused.output
        assert fake.authorization == [None]
        # The token file is missing (or unreadable): no token, no error of its own.
        port = fake.url.rsplit(":", 1)[1]
        config = agent_config(tmp_path / "none", f"127.0.0.1:{port}", token=None)
        monkeypatch.setenv("SDMESH_CONFIG", str(config))
        refused = status(fake.url)
        assert refused.exit_code == 2 and "a token is needed" in refused.output
        assert "Traceback" not in refused.output and fake.authorization[-1] is None
        # No config file at all: as before.
        monkeypatch.setenv("SDMESH_CONFIG", str(tmp_path / "missing.toml"))
        assert status(fake.url).exit_code == 2 and fake.authorization[-1] is None


def test_local_agent_token_is_for_loopback_urls_at_the_agents_port(tmp_path: Path) -> None:
    default = {"SDMESH_CONFIG": str(agent_config(tmp_path, None))}
    assert local_agent_token("http://127.0.0.1:7948", default) == TOKEN
    assert local_agent_token("https://[::1]:7948/v1/pools", default) == TOKEN
    for url in (
        "http://10.0.0.5:7948",  # another host: the token must not leave the machine
        "https://agent.example.org:7948",
        "http://127.0.0.1:7949",  # another port on loopback: not the agent
        "http://127.0.0.1",
        "ftp://127.0.0.1:7948",
        "http://127.0.0.1:notaport",
    ):
        assert local_agent_token(url, default) is None, url
    wildcard = {"SDMESH_CONFIG": str(agent_config(tmp_path, "0.0.0.0:8000"))}
    assert local_agent_token("http://127.0.0.1:8000", wildcard) == TOKEN
    elsewhere = {"SDMESH_CONFIG": str(agent_config(tmp_path, "10.0.0.5:7948"))}
    assert local_agent_token("http://127.0.0.1:7948", elsewhere) is None
    broken = tmp_path / "broken.toml"
    broken.write_text("api = [unterminated\n")
    assert local_agent_token("http://127.0.0.1:7948", {"SDMESH_CONFIG": str(broken)}) is None
    broken.write_bytes(b"\xff\xfe not utf-8")
    assert local_agent_token("http://127.0.0.1:7948", {"SDMESH_CONFIG": str(broken)}) is None


def test_the_default_config_is_etc_sdmesh(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def refuse(path: str, *_: object) -> None:
        opened.append(path)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    assert local_agent_token("http://127.0.0.1:7948", {}) is None
    assert opened == [agent_client.AGENT_CONFIG] == ["/etc/sdmesh/sdmesh.toml"]
