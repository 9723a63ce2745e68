"""The protocol's datagram handling, on a fake transport: sealed in, sealed out, nothing else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kademlia.node import Node

from sdmesh.dht import wire
from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.eviction import FailureCounter
from sdmesh.dht.protocol import DhtProtocol
from sdmesh.dht.records import RecordAuthority
from sdmesh.dht.rtt import RttConfig, RttTable
from sdmesh.dht.storage import RecordStore
from sdmesh.transport import (
    Channel,
    FrameCodec,
    Keyring,
    TransportSecurity,
    identity_tag,
)

SECURITY = TransportSecurity(Keyring([b"\x01" * 32]))
OWN = b"o" * 20
PEER = b"p" * 20
PEER_ADDR = ("127.0.0.2", 4000)


class FakeTransport:
    """Collects what the protocol sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.fixture
def setup() -> tuple[DhtProtocol, FakeTransport, FrameCodec]:
    authority = RecordAuthority.from_security(SECURITY)
    protocol = DhtProtocol(
        Node(OWN),
        RecordStore(OWN, authority),
        4,
        codec=SECURITY.new_codec(max_frame=65000, identity=OWN),
        authority=authority,
        rtt=RttTable(RttConfig(initial=0.05, minimum=0.01)),
        failures=FailureCounter(),
        counters=DhtCounters(),
    )
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    peer_codec = SECURITY.new_codec(max_frame=65000, identity=PEER)
    return protocol, transport, peer_codec


def seal(codec: FrameCodec, message: Any, channel: Channel = Channel.DHT) -> bytes:
    return codec.seal(message, channel=channel, now=time.time(), recipient=identity_tag(OWN))


def opened(codec: FrameCodec, frame: bytes) -> Any:
    return codec.open(frame, channel=Channel.DHT, now=time.time()).obj


async def test_a_sealed_ping_is_answered_sealed_and_the_sender_welcomed(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, peer = setup
    protocol.datagram_received(seal(peer, wire.request(b"m" * 20, "ping", PEER)), PEER_ADDR)
    frame, addr = transport.sent[0]
    assert addr == PEER_ADDR
    assert opened(peer, frame) == [wire.RESPONSE, b"m" * 20, OWN, OWN]
    assert PEER in {c.id for c in protocol.router.contacts()}
    assert protocol.counters.requests_received == 1 and protocol.counters.responses_sent == 1
    protocol.close()


async def test_unsealed_or_foreign_datagrams_are_dropped_and_counted(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, _ = setup
    foreign = TransportSecurity(Keyring([b"\x02" * 32])).new_codec(max_frame=65000)
    protocol.datagram_received(b"\x00" + b"m" * 20 + b"\x92\xa4ping\x90", PEER_ADDR)  # rpcudp
    protocol.datagram_received(seal(foreign, wire.request(b"m" * 20, "ping", PEER)), PEER_ADDR)
    assert transport.sent == []
    drops = protocol.counters.drops
    assert drops.bad_version == 1 and drops.unknown_key == 1


async def test_authenticated_but_malformed_calls_are_counted_not_answered(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, peer = setup
    for message in (["x"], [0, b"m" * 20, "stun", [PEER]], [0, b"m" * 20, "ping", [b"short"]]):
        protocol.datagram_received(seal(peer, message), PEER_ADDR)
    assert transport.sent == []
    assert protocol.counters.malformed == 3


async def test_reply_from_another_address_is_ignored(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, peer = setup
    future = protocol.request(PEER_ADDR, wire.PING)
    msg_id = opened(peer, transport.sent[0][0])[1]
    protocol.datagram_received(seal(peer, wire.response(msg_id, PEER, PEER)), ("127.0.0.9", 1))
    assert protocol.counters.unexpected_responses == 1 and not future.done()
    protocol.datagram_received(seal(peer, wire.response(msg_id, PEER, PEER)), PEER_ADDR)
    response = await future
    assert response is not None and response.responder == PEER


async def test_timeout_then_late_reply_still_measures_the_path(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, peer = setup
    future = protocol.request(PEER_ADDR, wire.PING)
    msg_id = opened(peer, transport.sent[0][0])[1]
    assert await future is None  # after the 50 ms initial timeout
    assert protocol.counters.timeouts == 1
    assert protocol.rtt.estimator(PEER_ADDR) is None
    protocol.datagram_received(seal(peer, wire.response(msg_id, PEER, PEER)), PEER_ADDR)
    assert protocol.counters.late_responses == 1
    estimator = protocol.rtt.estimator(PEER_ADDR)
    assert estimator is not None and estimator.srtt is not None and estimator.srtt >= 0.05


async def test_answer_from_a_different_node_id_counts_as_a_failure(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, peer = setup
    asked = Node(PEER, *PEER_ADDR)
    call = asyncio.ensure_future(protocol.call_ping(asked))
    await asyncio.sleep(0)
    msg_id = opened(peer, transport.sent[0][0])[1]
    stranger = b"s" * 20
    protocol.datagram_received(seal(peer, wire.response(msg_id, stranger, stranger)), PEER_ADDR)
    assert await call is None
    assert protocol.counters.identity_mismatches == 1
    assert protocol.failures.failures(PEER) == 1


def test_unknown_attributes_are_errors_not_remote_calls(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    protocol, transport, _ = setup
    with pytest.raises(AttributeError):
        protocol.stun  # noqa: B018 - rpcudp would have made this a remote call
    assert transport.sent == []


async def test_frames_for_another_node_or_port_or_no_one_are_dropped_and_counted(
    setup: tuple[DhtProtocol, FakeTransport, FrameCodec],
) -> None:
    """The replays issue 12 found: gossip frames sent to the DHT port, and frames sniffed on
    their way to another node; only a bootstrap ping may come unaddressed."""
    protocol, transport, peer = setup
    find = wire.request(b"m" * 20, "find_node", PEER, b"k" * 20)
    now = time.time()
    protocol.datagram_received(seal(peer, find, channel=Channel.DATAGRAM), PEER_ADDR)
    to_other = peer.seal(find, channel=Channel.DHT, now=now, recipient=identity_tag(b"x" * 20))
    protocol.datagram_received(to_other, PEER_ADDR)
    protocol.datagram_received(peer.seal(find, channel=Channel.DHT, now=now), PEER_ADDR)
    assert transport.sent == []
    drops = protocol.counters.drops
    assert drops.misdirected == 2 and drops.unaddressed == 1
    ping = wire.request(b"n" * 20, "ping", PEER)
    protocol.datagram_received(peer.seal(ping, channel=Channel.DHT, now=now), PEER_ADDR)
    assert len(transport.sent) == 1  # a bootstrap ping is answered, addressed to its sender
    assert opened(peer, transport.sent[0][0])[1] == b"n" * 20
    protocol.close()
