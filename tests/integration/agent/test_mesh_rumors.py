"""MeshNode over real sealed sockets on loopback: rumors published on one node reach the
other's listeners, and bad publications fail at the call."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from sdmesh.agent.mesh import MeshNode
from sdmesh.membership import JoinRequested, Member, Membership, MembershipConfig, Rumor, Start
from sdmesh.transport import StreamClient, UdpEndpoint
from sdmesh.transport.keyring import KEY_SIZE, Keyring
from sdmesh.transport.security import TransportSecurity
from sdmesh.transport.stream import StreamServer


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def start_node(name: str, security: TransportSecurity) -> tuple[MeshNode, StreamServer]:
    for _ in range(20):
        udp = await UdpEndpoint.bind(("127.0.0.1", 0), security)
        core = Membership(
            MembershipConfig(max_datagram_bytes=udp.max_payload),
            Member(name, udp.local_address),
            random.Random(name),
        )
        node = MeshNode(core, udp, StreamClient(security))
        try:
            server = await StreamServer.start(udp.local_address, security, node.handle_stream)
        except OSError:  # that port number is taken for TCP: pick another
            await stop_node(node)
            continue
        node.feed(Start())
        return node, server
    raise RuntimeError("no free UDP/TCP port pair")


async def stop_node(node: MeshNode, server: StreamServer | None = None) -> None:
    if server is not None:
        server.close()
        await server.wait_closed()
    await node.close()
    node.udp.close()
    await node.udp.wait_closed()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[MeshNode, MeshNode]]:
    security = TransportSecurity(Keyring([bytes([7]) * KEY_SIZE]))
    a, server_a = await start_node("a", security)
    b, server_b = await start_node("b", security)
    b.feed(JoinRequested((a.core.address,)))
    await asyncio.wait_for(b.joined.wait(), 5)
    yield a, b
    await stop_node(a, server_a)
    await stop_node(b, server_b)


async def test_published_rumor_reaches_the_other_nodes_listeners(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    a, b = pair
    heard_a: list[Rumor] = []
    heard_b: list[Rumor] = []
    a.rumor_listeners.append(heard_a.append)
    b.rumor_listeners.append(heard_b.append)
    a.publish("pools", "pool-7", b"terminated")
    expected = Rumor("pools", "pool-7", 1, "a", b"terminated")
    assert heard_a == [expected]  # our own publication takes the same path
    await eventually(lambda: heard_b == [expected])
    assert b.core.rumors("pools") == [expected]


async def test_publication_outside_the_limits_fails_at_the_call(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="payload"):
        a.publish("pools", "pool-7", bytes(641))
    with pytest.raises(ValueError, match="topic"):
        a.publish("x" * 33, "pool-7", b"")
    assert a.core.rumors() == []
