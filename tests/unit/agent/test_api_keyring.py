"""The admin routes for keys over the real driver and core: bad input is a 4xx that changes
nothing, a remote caller is not an admin, a CA-signed revocation drops the member."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_access import CALLER_KEY, Caller
from sdmesh.agent.api_keyring import caller_is_admin
from sdmesh.agent.keyring_admin import KeyringAdmin
from sdmesh.agent.mesh import MeshNode
from sdmesh.membership import Alive, Member, Membership, MembershipConfig, Received, State
from sdmesh.membership.identity import IdentityChecker
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import StreamClient, TransportSecurity, UdpEndpoint
from sdmesh.transport.keyring import Keyring, generate_key, key_id, write_key_file
from sdmesh.trust.identity import revocation_line, sign_certificate, sign_revocation
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role

Setup = tuple["TestClient[web.Request, web.Application]", Agent]
NOW = time.time()
CA = OperatorKey.generate("cluster-ca")
B_ADDR = ("127.0.0.2", 9)  # another address than ours: streams from it can be told


def identity(name: str, serial: int) -> IdentityChecker:
    key = OperatorKey.generate(name)
    cert = sign_certificate(CA, name, key.public, serial, int(NOW) - 60, int(NOW) + 3600)
    return IdentityChecker(CA.public, key, cert)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    ring = Keyring([generate_key()])
    write_key_file(tmp_path / "cluster.key", ring.to_text(), overwrite=False)
    security = TransportSecurity(ring, key_file=tmp_path / "cluster.key")
    config, token = secured_config(tmp_path, name="me")
    agent = Agent(config, security)
    udp = await UdpEndpoint.bind(("127.0.0.1", 0), security)
    checker = identity("me", 1)
    core = Membership(
        MembershipConfig(randomize_probe_phase=False),
        Member("me", udp.local_address),
        random.Random(1),
        checker,
    )
    node = MeshNode(core, udp, StreamClient(security))
    b = identity("b", 2)
    node.feed(Received(B_ADDR, Alive("b", 1, B_ADDR, {}, b.prove_alive(1, B_ADDR, {}))))
    agent.node, agent.identity = node, checker
    agent.keyring_admin = KeyringAdmin("me", security, checker)
    try:
        server = TestServer(build_app(agent), host="127.0.0.1")
        async with TestClient(server, headers=bearer(token)) as client:
            yield client, agent
    finally:
        await node.close()
        udp.close()


async def test_a_rotation_step_applies_here_and_lists_the_keys(setup: Setup) -> None:
    client, _ = setup
    new = generate_key()
    body = {"op": "install", "key": base64.b64encode(new).decode(), "mesh": False}
    answer = await client.post("/v1/keyring", json=body)
    assert answer.status == 200
    listed = await (await client.get("/v1/keyring")).json()
    assert key_id(new).hex() in listed["keys"] and listed["primary"] != key_id(new).hex()


@pytest.mark.parametrize(
    "body",
    [{"op": "rotate"}, {"op": "install", "key": "%%%"}, {"op": "use", "key_id": "12"}, [1]],
)
async def test_bad_rotation_requests_are_400_and_change_nothing(setup: Setup, body: object) -> None:
    client, agent = setup
    before = agent.security.keyring.keys if agent.security.keyring else ()
    answer = await client.post("/v1/keyring", json=body)
    assert answer.status == 400
    assert agent.security.keyring is not None and agent.security.keyring.keys == before


async def test_removing_the_primary_is_a_conflict(setup: Setup) -> None:
    client, agent = setup
    assert agent.security.keyring is not None
    primary = agent.security.keyring.primary_id.hex()
    answer = await client.post("/v1/keyring", json={"op": "remove", "key_id": primary})
    assert answer.status == 409 and "primary" in await answer.text()


def test_only_the_admin_role_is_admin() -> None:
    from aiohttp.test_utils import make_mocked_request

    for role, allowed in ((Role.READ, False), (Role.OPERATE, False), (Role.ADMIN, True)):
        request = make_mocked_request("POST", "/v1/keyring")
        request[CALLER_KEY] = Caller("token:t", role, "tcp", "127.0.0.1")  # set by the guard
        assert caller_is_admin(request) is allowed


async def test_a_ca_signed_revocation_drops_the_member_and_a_forged_one_is_refused(
    setup: Setup,
) -> None:
    client, agent = setup
    assert agent.node is not None and agent.node.core.state_of("b") is State.ALIVE
    forged = sign_revocation(OperatorKey.generate("cluster-ca"), 2, "b", int(NOW))
    answer = await client.post(
        "/v1/identity/revocations", json={"revocation": revocation_line(forged).strip()}
    )
    assert answer.status == 403
    junk = await client.post("/v1/identity/revocations", json={"revocation": "AAAA"})
    assert junk.status == 400
    assert agent.node.core.state_of("b") is State.ALIVE
    real = sign_revocation(CA, 2, "b", int(NOW))
    answer = await client.post(
        "/v1/identity/revocations", json={"revocation": revocation_line(real).strip()}
    )
    assert answer.status == 200 and await answer.json() == {"serial": 2, "name": "b"}
    assert agent.node.core.state_of("b") is State.LEFT
    # Its streams (pool orders, push-pull) are refused; ours, from another address, are not.
    assert await agent._handle_stream({"rpc": "keyring"}, ("127.0.0.2", 40000)) is None
    assert await agent._handle_stream({"rpc": "keyring"}, ("127.0.0.1", 40000)) is not None
    health = await (await client.get("/v1/health")).json()
    assert health["drops"]["identity_blocked"] == 1
