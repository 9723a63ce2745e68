"""Sealed request/response over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sdmesh.transport.keyring import KEY_SIZE, Keyring
from sdmesh.transport.seal import Channel
from sdmesh.transport.security import TransportSecurity
from sdmesh.transport.stream import StreamClient, StreamError, StreamServer, StreamTimeout

K1, K2 = (bytes([n]) * KEY_SIZE for n in (1, 2))
LOCAL = ("127.0.0.1", 0)
SECURITY = TransportSecurity(Keyring([K1]))


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def echo(request: Any, peer: Any) -> Any:
    if request == "fail":
        raise RuntimeError("handler bug")
    if request == "slow":
        await asyncio.sleep(10)
    return {"echo": request, "peer_port": peer[1]}


@pytest.fixture
async def server() -> AsyncIterator[StreamServer]:
    async with await StreamServer.start(LOCAL, SECURITY, echo, io_timeout=2.0) as srv:
        yield srv


async def test_a_one_megabyte_state_sync_round_trips(server: StreamServer) -> None:
    state = {
        "members": [{"name": f"host-{n}", "incarnation": n, "meta": "x" * 40} for n in range(5000)],
        "blob": os.urandom(1024 * 1024),
    }
    reply = await StreamClient(SECURITY).request(server.local_address, state, timeout=10)
    assert reply["echo"] == state
    assert server.counters.total == 0


async def test_many_requests_from_one_client(server: StreamServer) -> None:
    client = StreamClient(SECURITY)
    replies = await asyncio.gather(
        *(client.request(server.local_address, n, timeout=5) for n in range(20))
    )
    assert [r["echo"] for r in replies] == list(range(20))


async def test_the_wrong_key_gets_no_answer(server: StreamServer) -> None:
    intruder = StreamClient(TransportSecurity(Keyring([K2])))
    with pytest.raises(StreamError, match="without a response"):
        await intruder.request(server.local_address, "hello", timeout=2)
    assert server.counters.unknown_key == 1


async def test_insecure_clients_are_refused_by_version(server: StreamServer) -> None:
    with pytest.raises(StreamError):
        await StreamClient(TransportSecurity.insecure()).request(
            server.local_address, "hi", timeout=2
        )
    assert server.counters.bad_version == 1


async def test_insecure_mode_round_trips() -> None:
    plain = TransportSecurity.insecure()
    async with await StreamServer.start(LOCAL, plain, echo) as srv:
        reply = await StreamClient(plain).request(srv.local_address, [1, 2], timeout=2)
    assert reply["echo"] == [1, 2]


async def test_handler_failure_and_timeout(server: StreamServer) -> None:
    client = StreamClient(SECURITY)
    with pytest.raises(StreamError, match="without a response"):
        await client.request(server.local_address, "fail", timeout=2)
    with pytest.raises(StreamTimeout):
        await client.request(server.local_address, "slow", timeout=0.2)


async def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(LOCAL)
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(StreamError, match="cannot connect"):
        await StreamClient(SECURITY).request(("127.0.0.1", port), "x", timeout=2)


async def raw_exchange(address: Any, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address[:2])
    writer.write(payload)
    writer.write_eof()  # one request only: the server answers, sees EOF, and hangs up
    await writer.drain()
    async with asyncio.timeout(2):
        data = await reader.read()
    writer.close()
    return data


async def test_replayed_requests_are_dropped(server: StreamServer) -> None:
    codec = SECURITY.new_codec(max_frame=1 << 20)
    frame = codec.seal("once", channel=Channel.STREAM_REQUEST, now=time.time())
    framed = struct.pack(">I", len(frame)) + frame
    assert await raw_exchange(server.local_address, framed) != b""
    assert await raw_exchange(server.local_address, framed) == b""  # closed, no answer
    assert server.counters.replay == 1


async def test_an_oversize_announcement_is_cut_off() -> None:
    async with await StreamServer.start(LOCAL, SECURITY, echo, max_frame=1000) as srv:
        assert await raw_exchange(srv.local_address, struct.pack(">I", 1001)) == b""
        assert srv.counters.oversize == 1
        assert await raw_exchange(srv.local_address, struct.pack(">I", 5) + b"\x03abcd") == b""
        assert srv.counters.malformed == 1


async def test_an_idle_connection_gives_way_to_a_peer() -> None:
    """Issue 12: idle sockets filled the table and a pool failed. Now a newcomer takes the
    place of the oldest connection that has not authenticated."""
    async with await StreamServer.start(LOCAL, SECURITY, echo, max_connections=1) as srv:
        hog_reader, hog = await asyncio.open_connection(*srv.local_address[:2])
        await eventually(lambda: len(srv._connections) == 1)
        reply = await StreamClient(SECURITY).request(srv.local_address, "x", timeout=2)
        assert reply["echo"] == "x"
        assert srv.gate.evicted == 1
        assert await asyncio.wait_for(hog_reader.read(), 2) == b""  # the hog was cut off
        hog.close()


async def test_a_full_table_of_peers_refuses_newcomers() -> None:
    async with await StreamServer.start(LOCAL, SECURITY, echo, max_connections=1) as srv:
        slow = asyncio.ensure_future(
            StreamClient(SECURITY).request(srv.local_address, "slow", timeout=5)
        )
        await eventually(lambda: len(srv.gate) == 1 and srv.gate.pending == 0)
        with pytest.raises(StreamError):
            await StreamClient(SECURITY).request(srv.local_address, "x", timeout=2)
        assert srv.counters.overload == 1
        slow.cancel()


async def test_idle_connections_are_closed_after_the_handshake_timeout() -> None:
    async with await StreamServer.start(LOCAL, SECURITY, echo, handshake_timeout=0.2) as srv:
        reader, writer = await asyncio.open_connection(*srv.local_address[:2])
        writer.write(b"\x00\x00")  # half a length prefix, then nothing
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        await eventually(lambda: len(srv.gate) == 0)


async def test_no_big_frame_is_read_before_authentication(server: StreamServer) -> None:
    """A stranger may announce 64 KiB at most; a peer's big request comes after a hello."""
    assert await raw_exchange(server.local_address, struct.pack(">I", 64 * 1024 + 1)) == b""
    assert server.counters.oversize == 1
    big = {"blob": os.urandom(200_000)}
    assert (await StreamClient(SECURITY).request(server.local_address, big, timeout=5))[
        "echo"
    ] == big
    assert server.counters.oversize == 1


async def test_requests_are_bound_to_their_recipient() -> None:
    """A request addressed to member c does not open at b; unaddressed ones obey the policy."""
    async with await StreamServer.start(
        LOCAL, SECURITY, echo, identity="b", accepts_unaddressed=lambda r: r != "order"
    ) as srv:
        to_c = StreamClient(SECURITY, identity="a")
        to_c.peers.introduce(srv.local_address, "c")
        with pytest.raises(StreamError, match="without a response"):
            await to_c.request(srv.local_address, "order", timeout=2)
        assert srv.counters.misdirected == 1
        anonymous = StreamClient(SECURITY, identity="a")
        with pytest.raises(StreamError, match="without a response"):
            await anonymous.request(srv.local_address, "order", timeout=2)
        assert srv.counters.unaddressed == 1
        assert (await anonymous.request(srv.local_address, "push-pull", timeout=2))["echo"]
        to_b = StreamClient(SECURITY, identity="a")
        to_b.peers.introduce(srv.local_address, "b")
        assert (await to_b.request(srv.local_address, "order", timeout=2))["echo"] == "order"


async def test_a_request_given_up_on_is_not_delivered_later() -> None:
    """A request that timed out must not reach its server afterwards: the client resets the
    connection and its kernel drops what it had not sent yet (an order to a host cut off for
    a while would otherwise still arrive when the cut heals: docs/ha.md)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a peer that lags
    listener.bind(LOCAL)
    listener.listen()
    listener.settimeout(5)
    big = os.urandom(8 * 1024 * 1024)  # far more than the buffers between the two hold
    request = asyncio.ensure_future(
        StreamClient(SECURITY).request(listener.getsockname(), big, timeout=0.5)
    )
    await asyncio.sleep(0.2)
    connection, _ = listener.accept()  # connected, but reading nothing yet
    with pytest.raises(StreamTimeout):
        async with asyncio.timeout(10):  # without the reset, closing waits on the lagging peer
            await request
    connection.settimeout(5)
    received = 0
    with pytest.raises(ConnectionResetError):
        while chunk := connection.recv(65536):  # the peer catches up: nothing more comes
            received += len(chunk)
    assert received < len(big)
    connection.close()
    listener.close()
