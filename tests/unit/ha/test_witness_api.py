"""A witness runs no pools, and says so: ``/v1/pools`` answers 409 "a witness runs no
pools" (a host still starting answers 503, to be tried again)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import load_security


@pytest.mark.parametrize(("witness", "status"), [(True, 409), (False, 503)])
async def test_pools_on_a_witness_are_refused_for_good(
    tmp_path: Path, witness: bool, status: int
) -> None:
    config, token = secured_config(tmp_path, "me")
    agent = Agent(dataclasses.replace(config, witness=witness), load_security(None, insecure=True))
    async with TestClient(TestServer(build_app(agent)), headers=bearer(token)) as client:
        response = await client.get("/v1/pools")
        assert response.status == status
        text = await response.text()
        if witness:
            assert "a witness runs no pools" in text
        else:
            assert "still starting" in text
