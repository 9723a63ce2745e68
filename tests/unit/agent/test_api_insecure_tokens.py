"""``api-insecure`` makes TCP callers an anonymous admin only while the agent holds no token:
the first token created ends it at once, not at the next restart (review finding)."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.config import AgentConfig
from sdmesh.transport import load_security


async def test_anonymous_admin_ends_with_the_first_token(tmp_path: Path) -> None:
    config = AgentConfig(name="n0", state_dir=tmp_path, api_insecure=True)
    agent = Agent(config, load_security(None, insecure=True))
    async with TestClient(TestServer(build_app(agent), host="127.0.0.1")) as client:
        assert (await client.get("/v1/peers")).status != 401
        made = await client.post("/v1/tokens", json={"name": "ops", "role": "read"})
        assert made.status in (200, 201), await made.text()
        assert (await client.get("/v1/peers")).status == 401
