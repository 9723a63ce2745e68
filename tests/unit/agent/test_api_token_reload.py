"""SIGHUP (``Agent.reload``) re-reads the API's tokens: a replaced ``api-token-file`` token
counts at once and the old one opens nothing, without a restart (issue 12, item 5)."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_auth import new_token
from sdmesh.safeio import write_private
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import load_security


async def test_a_new_token_file_counts_after_reload_and_the_old_token_does_not(
    tmp_path: Path,
) -> None:
    config, old = secured_config(tmp_path)
    agent = Agent(config, load_security(None, insecure=True))
    async with TestClient(TestServer(build_app(agent), host="127.0.0.1")) as client:
        assert (await client.get("/v1/health", headers=bearer(old))).status == 200
        new = new_token()
        assert config.api_token_file is not None
        write_private(Path(config.api_token_file), f"{new}\n".encode())
        assert (await client.get("/v1/health", headers=bearer(new))).status == 401
        report = agent.reload()
        assert report["api-tokens"] == []  # read again, no problem
        assert (await client.get("/v1/health", headers=bearer(new))).status == 200
        assert (await client.get("/v1/health", headers=bearer(old))).status == 401
