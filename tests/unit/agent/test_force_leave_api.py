"""``POST /v1/peers/{name}/force-leave`` over the real driver (MeshNode) and core: what each
outcome answers, and that the view and the member listeners follow."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.mesh import MeshNode
from sdmesh.membership import (
    Dead,
    LeaveRequested,
    Member,
    MemberEvent,
    MemberEventKind,
    Membership,
    MembershipConfig,
    Preload,
    Received,
    Suspect,
)
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import StreamClient, UdpEndpoint, load_security

Setup = tuple["TestClient[web.Request, web.Application]", Agent, list[MemberEvent]]

# Loopback ports nothing answers on: the core's gossip goes nowhere.
PEERS = {name: ("127.0.0.1", 9) for name in ("dead", "alive", "suspect")}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    security = load_security(None, insecure=True)
    config, token = secured_config(tmp_path, "me")
    agent = Agent(config, security)
    udp = await UdpEndpoint.bind(("127.0.0.1", 0), security)
    core = Membership(
        MembershipConfig(randomize_probe_phase=False),
        Member("me", udp.local_address),
        random.Random(1),
    )
    node = MeshNode(core, udp, StreamClient(security))
    node.feed(Preload(tuple(Member(name, addr) for name, addr in PEERS.items())))
    node.feed(Received(PEERS["alive"], Dead("dead", 0, "alive")))
    node.feed(Received(PEERS["alive"], Suspect("suspect", 0, "alive")))
    events: list[MemberEvent] = []
    node.listeners.append(events.append)
    agent.node = node
    try:
        async with TestClient(TestServer(build_app(agent)), headers=bearer(token)) as client:
            yield client, agent, events
    finally:
        await node.close()
        udp.close()


async def test_a_dead_member_is_forced_out_and_the_view_shows_it_left(
    setup: Setup,
) -> None:
    client, _, events = setup
    response = await client.post("/v1/peers/dead/force-leave")
    assert response.status == 200
    assert await response.json() == {
        "name": "dead",
        "outcome": "left",
        "state": "left",
        "incarnation": 0,
    }
    assert [(e.kind, e.member.name) for e in events] == [(MemberEventKind.LEFT, "dead")]
    peers = await (await client.get("/v1/peers")).json()
    assert {p["name"]: p["state"] for p in peers}["dead"] == "left"
    again = await client.post("/v1/peers/dead/force-leave")
    assert again.status == 200
    assert (await again.json())["outcome"] == "already-left"
    assert len(events) == 1


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("alive", 409, "alive is alive; only failed members can be forced out"),
        ("suspect", 409, "suspect is suspected, not failed yet; only failed members"),
        ("me", 409, "me is this agent; 'sdmesh leave' makes it leave gracefully"),
        ("nobody", 404, "nobody is not a member this agent knows"),
    ],
)
async def test_refusals_say_why(setup: Setup, name: str, status: int, message: str) -> None:
    client, agent, events = setup
    response = await client.post(f"/v1/peers/{name}/force-leave")
    assert response.status == status
    assert (await response.text()).startswith(message)
    assert events == []
    assert agent.node is not None and agent.node.core.stats.forced_leaves == 0


async def test_an_agent_that_is_starting_or_leaving_answers_503(
    setup: Setup,
) -> None:
    client, agent, _ = setup
    node = agent.node
    assert node is not None
    node.feed(LeaveRequested())
    response = await client.post("/v1/peers/dead/force-leave")
    assert response.status == 503 and "leaving" in await response.text()
    agent.node = None
    response = await client.post("/v1/peers/dead/force-leave")
    assert response.status == 503 and "starting" in await response.text()
    agent.node = node  # closed by the fixture
