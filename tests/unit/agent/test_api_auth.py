"""The API's TCP side: tokens over loopback too, the public files, HTTPS, start-up checks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from sdmesh.agent.api_access import Access, access_middleware
from sdmesh.agent.api_auth import (
    install_access,
    is_loopback_host,
    load_api_security,
    read_token_file,
)
from sdmesh.agent.api_tokens import TokenStore
from sdmesh.agent.config import AgentConfig, ConfigError, load_config
from sdmesh.cli.keygen import keygen

TOKEN = "s3cret-token-0123456789abcdefghij"


def token_file(tmp_path: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> str:
    path = tmp_path / "api.token"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


# ------------------------------------------------------------------------ the guard
async def ok(request: web.Request) -> web.Response:
    resource = request.match_info.route.resource
    return web.json_response({"route": resource.canonical if resource else None})


def agent_like_app(tmp_path: Path, anonymous: bool = False) -> web.Application:
    """An app shaped like the agent's: API routes, the dashboard's files, the description."""
    (tmp_path / "web").mkdir(exist_ok=True)
    (tmp_path / "web" / "app.js").write_text("// the dashboard")
    access = Access(TokenStore(None, None if anonymous else TOKEN), {}, anonymous)
    app = web.Application(middlewares=[access_middleware(access)])
    app.router.add_get("/", ok)
    app.router.add_get("/ui/{file}", ok)
    app.router.add_static("/static-ui/", tmp_path / "web")
    app.router.add_get("/ui-admin", ok)
    app.router.add_get("/v1/openapi.yaml", ok)
    app.router.add_get("/v1/peers", ok)
    app.router.add_post("/v1/pools", ok)
    app.router.add_get("/v1/events", ok)
    app.router.add_get("/metrics", ok)
    return app


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(agent_like_app(tmp_path), host="127.0.0.1")) as test_client:
        yield test_client


async def test_loopback_tcp_is_no_credential(
    client: TestClient[web.Request, web.Application],
) -> None:
    """The test client connects from 127.0.0.1: it needs the token like anyone."""
    for method, path in (("GET", "/v1/peers"), ("POST", "/v1/pools"), ("GET", "/metrics")):
        answer = await client.request(method, path)
        assert answer.status == 401, path
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="sdmesh"'
        assert "needs a token" in (await answer.json())["error"]


async def test_a_wrong_token_gets_401_invalid_token(
    client: TestClient[web.Request, web.Application],
) -> None:
    answer = await client.get("/v1/peers", headers={"Authorization": "Bearer nope"})
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert TOKEN not in await answer.text()


async def test_the_token_passes_in_the_header_or_for_events_in_the_query(
    client: TestClient[web.Request, web.Application],
) -> None:
    header = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/v1/peers", headers=header)).status == 200
    assert (await client.post("/v1/pools", headers=header)).status == 200
    # EventSource cannot set headers: the dashboard sends the token as a parameter.
    assert (await client.get("/v1/events", params={"access_token": TOKEN})).status == 200
    refused = await client.get("/v1/peers", params={"access_token": TOKEN})
    assert refused.status == 401 and "GET /v1/events only" in (await refused.json())["error"]


async def test_the_dashboard_files_and_the_description_are_public(
    client: TestClient[web.Request, web.Application],
) -> None:
    for path in ("/", "/ui/app.js", "/v1/openapi.yaml"):
        assert (await client.get(path)).status == 200, path
        assert (await client.head(path)).status == 200, path
    assert (await client.post("/")).status in (401, 405), "only reading is public"
    assert (await client.get("/ui-admin")).status == 401, "/ui-admin is not under /ui/"
    assert (await client.get("/static-ui/app.js")).status == 401, "not a public route"


async def test_no_spelling_of_a_public_path_reaches_a_protected_route(
    client: TestClient[web.Request, web.Application],
) -> None:
    """Raw request targets, as a client that does not normalize them would send."""
    assert client.server.host is not None and client.server.port is not None
    for raw in ("/ui/../v1/peers", "/ui/%2e%2e/v1/peers", "/ui/..%2fv1/peers", "//v1/peers"):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(f"GET {raw} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status == 200:  # only a public route may have answered
            assert json.loads(body)["route"].startswith(("/ui/", "/v1/openapi")), raw
        else:
            assert status in (401, 404), raw


async def test_api_insecure_without_tokens_lets_anyone_in_as_admin(tmp_path: Path) -> None:
    app = agent_like_app(tmp_path, anonymous=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as open_client:
        assert (await open_client.post("/v1/pools")).status == 200


def test_build_app_guards_a_configured_api_first(tmp_path: Path) -> None:
    app = web.Application(middlewares=[web.normalize_path_middleware()])
    config = AgentConfig(state_dir=tmp_path, api_token_file=token_file(tmp_path))
    store = install_access(app, config)
    assert len(app.middlewares) == 2
    entry = store.lookup(TOKEN)
    assert entry is not None and entry.name == "api-token-file" and entry.role.label == "admin"


# ----------------------------------------------------------------------- start-up
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("agent.example.org", False),
    ],
)
def test_which_api_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_loopback_api_needs_nothing() -> None:
    security = load_api_security(AgentConfig())
    assert security.token is None and security.ssl_context is None
    assert security.warnings == ()


def test_an_exposed_api_without_tls_is_refused() -> None:
    """Tokens would cross the network in clear; without any token, TCP serves nothing but
    the public files, so a token is not required to start (it can be made later)."""
    with pytest.raises(ConfigError) as refused:
        load_api_security(AgentConfig(api=("0.0.0.0", 7948)))
    message = str(refused.value)
    assert "tls-cert" in message and "api-insecure" in message


def test_an_exposed_api_with_a_token_but_no_tls_is_refused(tmp_path: Path) -> None:
    config = AgentConfig(api=("10.0.0.5", 7948), api_token_file=token_file(tmp_path))
    with pytest.raises(ConfigError, match="tls-cert") as refused:
        load_api_security(config)
    assert "api-token-file" not in str(refused.value)


def test_api_insecure_lets_an_exposed_api_start_with_a_warning() -> None:
    security = load_api_security(AgentConfig(api=("0.0.0.0", 7948), api_insecure=True))
    assert security.token is None
    assert any("admin without a token" in warning for warning in security.warnings)


def test_the_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "sdmesh.toml"
    path.write_text(
        'api = "0.0.0.0:7948"\napi-token-file = "/etc/sdmesh/api.token"\n'
        'tls-cert = "/etc/sdmesh/api.crt"\ntls-key = "/etc/sdmesh/api.key"\n'
    )
    config = load_config(path, {}, environ={"SDMESH_API_INSECURE": "true"})
    assert config.api_token_file == "/etc/sdmesh/api.token"
    assert (config.tls_cert, config.tls_key) == ("/etc/sdmesh/api.crt", "/etc/sdmesh/api.key")
    assert config.api_insecure is True
    env = load_config(None, {}, environ={"SDMESH_API_TOKEN_FILE": "/run/token"})
    assert env.api_token_file == "/run/token" and env.api_insecure is False


def test_api_trust_loopback_defaults_to_true_and_comes_from_file_or_environment(
    tmp_path: Path,
) -> None:
    assert load_config(None, {}, environ={}).api_trust_loopback is True
    path = tmp_path / "sdmesh.toml"
    path.write_text("api-trust-loopback = false\n")
    assert load_config(path, {}, environ={}).api_trust_loopback is False
    overridden = load_config(path, {}, environ={"SDMESH_API_TRUST_LOOPBACK": "true"})
    assert overridden.api_trust_loopback is True
    for text, trusted in (("false", False), ("0", False), ("no", False), ("1", True)):
        env = load_config(None, {}, environ={"SDMESH_API_TRUST_LOOPBACK": text})
        assert env.api_trust_loopback is trusted, text
    path.write_text("api-trust-loopback = true\n")
    assert load_config(path, {}, environ={}).api_trust_loopback is True


def test_api_trust_loopback_false_is_accepted_with_a_warning_that_it_does_nothing() -> None:
    security = load_api_security(AgentConfig(api_trust_loopback=False))
    assert any("no longer has an effect" in warning for warning in security.warnings)


def test_tls_needs_both_files_and_good_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls-key"):
        load_api_security(AgentConfig(tls_cert=str(tmp_path / "a.crt")))
    with pytest.raises(ConfigError, match=r"tls-cert: .* does not exist"):
        load_api_security(
            AgentConfig(tls_cert=str(tmp_path / "a.crt"), tls_key=str(tmp_path / "a.key"))
        )
    (tmp_path / "a.crt").write_text("not a certificate")
    (tmp_path / "a.key").write_text("not a key")
    with pytest.raises(ConfigError, match="tls-cert/tls-key: cannot load"):
        load_api_security(
            AgentConfig(tls_cert=str(tmp_path / "a.crt"), tls_key=str(tmp_path / "a.key"))
        )


# --------------------------------------------------------------------- token files
def test_a_token_file_holds_one_token(tmp_path: Path) -> None:
    assert read_token_file(token_file(tmp_path, f"# the API token\n\n  {TOKEN}  \n")) == (
        TOKEN,
        [],
    )


def test_a_missing_or_empty_token_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api-token-file: .* does not exist.*keygen --token"):
        read_token_file(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"api-token-file: .* is empty"):
        read_token_file(token_file(tmp_path, "\n# nothing here\n"))
    with pytest.raises(ConfigError, match="one token line"):
        read_token_file(token_file(tmp_path, "one\ntwo\n"))
    with pytest.raises(ConfigError, match="printable ASCII"):
        read_token_file(token_file(tmp_path, "has a space\n"))


def test_a_readable_or_short_token_file_gets_warnings(tmp_path: Path) -> None:
    _, warnings = read_token_file(token_file(tmp_path, mode=0o644))
    assert len(warnings) == 1 and "chmod 600" in warnings[0]
    _, warnings = read_token_file(token_file(tmp_path, "short\n"))
    assert len(warnings) == 1 and "easy to guess" in warnings[0]


def test_keygen_token_writes_a_private_token_file(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    runner = CliRunner()
    made = runner.invoke(keygen, ["--token", str(path)])
    assert made.exit_code == 0, made.output
    assert os.stat(path).st_mode & 0o777 == 0o600
    token, warnings = read_token_file(str(path))
    assert len(token) >= 40 and warnings == []
    again = runner.invoke(keygen, ["--token", str(path)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(keygen, ["--token", "--force", str(path)]).exit_code == 0
    assert read_token_file(str(path))[0] != token
    printed = runner.invoke(keygen, ["--token"])
    assert printed.exit_code == 0 and len(printed.output.strip()) >= 40
    assert runner.invoke(keygen, ["--token", "--add", str(path)]).exit_code == 2
