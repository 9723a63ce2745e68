"""Sealed UDP between real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from sdmesh.transport.codec import PayloadTooLarge
from sdmesh.transport.keyring import KEY_SIZE, Keyring
from sdmesh.transport.seal import OVERHEAD
from sdmesh.transport.security import TransportSecurity
from sdmesh.transport.udp import EndpointClosed, UdpEndpoint

K1, K2 = (bytes([n]) * KEY_SIZE for n in (1, 2))
LOCAL = ("127.0.0.1", 0)


def secured(*keys: bytes) -> TransportSecurity:
    return TransportSecurity(Keyring(list(keys)))


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def recv(endpoint: UdpEndpoint, timeout: float = 2.0) -> tuple[Any, Any]:
    async with asyncio.timeout(timeout):
        return await endpoint.recv()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[UdpEndpoint, UdpEndpoint]]:
    security = secured(K1)
    async with (
        await UdpEndpoint.bind(LOCAL, security) as a,
        await UdpEndpoint.bind(LOCAL, security) as b,
    ):
        yield a, b


@pytest.fixture
def raw() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(LOCAL)
    sock.settimeout(2.0)
    yield sock
    sock.close()


async def test_two_endpoints_exchange_messages(pair: tuple[UdpEndpoint, UdpEndpoint]) -> None:
    a, b = pair
    await a.send(b.local_address, {"type": "ping", "seq": 1})
    sender, message = await recv(b)
    assert sender == a.local_address
    assert message == {"type": "ping", "seq": 1}
    await b.send(sender, {"type": "ack", "seq": 1})
    assert await recv(a) == (b.local_address, {"type": "ack", "seq": 1})
    for n in range(50):
        await a.send(b.local_address, n)
    received = [(await recv(b))[1] for _ in range(50)]
    assert sorted(received) == list(range(50))
    assert a.counters.total == b.counters.total == 0


async def test_a_node_with_the_wrong_key_gets_nothing_through(
    pair: tuple[UdpEndpoint, UdpEndpoint],
) -> None:
    a, b = pair
    async with await UdpEndpoint.bind(LOCAL, secured(K2)) as intruder:
        await intruder.send(a.local_address, {"type": "leave", "node": "b"})
        await a.send(intruder.local_address, {"type": "ping"})
        await eventually(lambda: a.counters.unknown_key == 1)
        await eventually(lambda: intruder.counters.unknown_key == 1)
        await a.send(b.local_address, "still fine")
        assert (await recv(b))[1] == "still fine"
        for endpoint in (a, intruder):  # nothing was delivered
            with pytest.raises(TimeoutError):
                await recv(endpoint, timeout=0.1)


async def test_replays_and_forgeries_from_a_raw_socket_are_dropped(
    pair: tuple[UdpEndpoint, UdpEndpoint], raw: socket.socket
) -> None:
    a, b = pair
    await b.send(raw.getsockname(), {"type": "suspect", "node": "c"})
    frame, _ = await asyncio.to_thread(raw.recvfrom, 2048)
    raw.sendto(frame, a.local_address)
    assert (await recv(a))[1] == {"type": "suspect", "node": "c"}
    for _ in range(3):
        raw.sendto(frame, a.local_address)
    await b.send(raw.getsockname(), "second")  # tamper with a frame a has not seen
    second, _ = await asyncio.to_thread(raw.recvfrom, 2048)
    tampered = second[:-1] + bytes([second[-1] ^ 0x80])
    raw.sendto(tampered, a.local_address)
    raw.sendto(b"\x03garbage", a.local_address)
    raw.sendto(b"", a.local_address)
    await eventually(lambda: a.counters.total == 6)
    assert a.counters.as_dict() == {
        **dict.fromkeys(a.counters.as_dict(), 0),
        "replay": 3,
        "auth_failed": 1,
        "malformed": 2,
    }
    await b.send(a.local_address, "after the attack")
    assert (await recv(a))[1] == "after the attack"


async def test_a_datagram_sniffed_on_its_way_to_one_member_opens_at_no_other(
    raw: socket.socket,
) -> None:
    """Issue 12: b sends to c (c's name is in b's book); the frame replayed to a is dropped
    as ``misdirected``, while c opens it."""
    security = secured(K1)
    async with (
        await UdpEndpoint.bind(LOCAL, security, identity="a") as a,
        await UdpEndpoint.bind(LOCAL, security, identity="b") as b,
    ):
        b.peers.introduce(raw.getsockname(), "c")
        await b.send(raw.getsockname(), "for c only")
        frame, _ = await asyncio.to_thread(raw.recvfrom, 2048)
        raw.sendto(frame, a.local_address)
        await eventually(lambda: a.counters.misdirected == 1)
        b.peers.introduce(a.local_address, "a")
        await b.send(a.local_address, "for a")
        assert (await recv(a))[1] == "for a"


async def test_oversize_datagrams_are_refused_both_ways(
    pair: tuple[UdpEndpoint, UdpEndpoint], raw: socket.socket
) -> None:
    a, _ = pair
    assert a.max_payload == a.max_datagram - OVERHEAD
    with pytest.raises(PayloadTooLarge):
        await a.send(raw.getsockname(), b"x" * (a.max_payload - 2))  # bin16 header: 3 bytes
    await a.send(raw.getsockname(), b"x" * (a.max_payload - 3))
    frame, _ = await asyncio.to_thread(raw.recvfrom, 4096)
    assert len(frame) == a.max_datagram
    raw.sendto(b"\x01" + bytes(4000), a.local_address)
    await eventually(lambda: a.counters.oversize == 1)


async def test_insecure_and_secure_nodes_do_not_mix() -> None:
    async with (
        await UdpEndpoint.bind(LOCAL, secured(K1)) as sealed,
        await UdpEndpoint.bind(LOCAL, TransportSecurity.insecure()) as plain,
        await UdpEndpoint.bind(LOCAL, TransportSecurity.insecure()) as plain2,
    ):
        await plain.send(sealed.local_address, "hello")
        await sealed.send(plain.local_address, "hello")
        await eventually(lambda: sealed.counters.bad_version == plain.counters.bad_version == 1)
        await plain.send(plain2.local_address, {"insecure": True})
        assert (await recv(plain2))[1] == {"insecure": True}


async def test_a_full_inbox_drops_and_counts(raw: socket.socket) -> None:
    async with (
        await UdpEndpoint.bind(LOCAL, secured(K1), queue_size=2) as slow,
        await UdpEndpoint.bind(LOCAL, secured(K1)) as fast,
    ):
        for n in range(10):
            await fast.send(slow.local_address, n)
        await eventually(lambda: slow.counters.overload == 8)
        assert [(await recv(slow))[1] for _ in range(2)] == [0, 1]


async def test_closing_ends_iteration_and_sending() -> None:
    endpoint = await UdpEndpoint.bind(LOCAL, secured(K1))
    received: list[Any] = []

    async def consume() -> None:
        async for _, message in endpoint:
            received.append(message)

    consumer = asyncio.create_task(consume())
    await endpoint.send(endpoint.local_address, "to myself")  # reflected: dropped
    await eventually(lambda: endpoint.counters.replay == 1)
    endpoint.close()
    await endpoint.wait_closed()
    async with asyncio.timeout(2):
        await consumer
    assert received == []
    with pytest.raises(EndpointClosed):
        await endpoint.send(endpoint.local_address, "late")
    with pytest.raises(EndpointClosed):
        await endpoint.recv()


async def test_host_names_are_refused_to_keep_dns_off_the_loop(
    pair: tuple[UdpEndpoint, UdpEndpoint],
) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="must be"):
        await a.send(("localhost", 9), "x")
