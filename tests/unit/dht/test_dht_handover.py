"""Which stored records a node hands to a newcomer (paper, section 2.5), and the stock bug."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage

from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.eviction import FailureCounter
from sdmesh.dht.ids import ID_SIZE, distance
from sdmesh.dht.protocol import DhtProtocol
from sdmesh.dht.records import RecordAuthority
from sdmesh.dht.rtt import RttTable
from sdmesh.dht.storage import RecordStore
from sdmesh.transport import Keyring, TransportSecurity

SECURITY = TransportSecurity(Keyring([b"\x01" * 32]))
AUTHORITY = RecordAuthority.from_security(SECURITY)
K = 3


def protocol_for(own: bytes, contacts: list[bytes]) -> DhtProtocol:
    protocol = DhtProtocol(
        Node(own),
        RecordStore(own, AUTHORITY),
        K,
        codec=SECURITY.new_codec(max_frame=65000),
        authority=AUTHORITY,
        rtt=RttTable(),
        failures=FailureCounter(),
        counters=DhtCounters(),
    )
    for n, node_id in enumerate(contacts):
        contact = Node(node_id, "127.0.0.1", 2000 + n)
        protocol.router.buckets[protocol.router.get_bucket_for(contact)].add_node(contact)
    return protocol


def at(n: int) -> bytes:
    return n.to_bytes(ID_SIZE, "big")


LOCATION = at(0)  # distances to the location are then just the ids


def test_newcomer_among_the_k_closest_gets_it_from_the_closest_holder() -> None:
    protocol = protocol_for(at(1), [at(10), at(20), at(30)])
    assert protocol._should_hand_over(Node(at(15)), LOCATION)


def test_newcomer_outside_the_k_closest_gets_nothing() -> None:
    protocol = protocol_for(at(1), [at(10), at(20), at(30)])
    assert not protocol._should_hand_over(Node(at(40)), LOCATION)


def test_only_the_closest_known_holder_sends() -> None:
    protocol = protocol_for(at(12), [at(10), at(20), at(30)])
    assert not protocol._should_hand_over(Node(at(15)), LOCATION)


def test_with_fewer_than_k_known_any_newcomer_is_among_the_k_closest() -> None:
    protocol = protocol_for(at(1), [at(10)])
    assert protocol._should_hand_over(Node(at(1000)), LOCATION)
    assert protocol_for(at(1), [])._should_hand_over(Node(at(1000)), LOCATION)


def expected_handover(own: bytes, known: list[bytes], newcomer: bytes, location: bytes) -> bool:
    """The rule from first principles, on the full sorted list."""
    ranked = sorted(known, key=lambda n: distance(n, location))
    among_k = len(ranked) < K or distance(newcomer, location) < distance(ranked[K - 1], location)
    closest_holder = not ranked or distance(own, location) < distance(ranked[0], location)
    return among_k and closest_holder


async def stock_handover(own: bytes, known: list[bytes], newcomer: bytes, location: bytes) -> bool:
    """What the package's ``welcome_if_new`` does for a record stored under ``location``."""
    storage = ForgetfulStorage()
    storage[location] = b"value"  # Server.set_digest stores under the digest itself
    protocol = KademliaProtocol(Node(own), storage, K)
    for n, node_id in enumerate(known):
        contact = Node(node_id, "127.0.0.1", 2000 + n)
        protocol.router.buckets[0].add_node(contact)
    sent: list[Any] = []

    async def record_store(node: Any, key: bytes, value: bytes) -> None:
        sent.append(key)

    protocol.call_store = record_store  # this instance only, instead of a network call
    protocol.welcome_if_new(Node(newcomer, "127.0.0.1", 9))
    await asyncio.sleep(0)
    return bool(sent)


async def test_hardened_rule_matches_first_principles_where_the_stock_one_does_not() -> None:
    rng = random.Random(4)
    disagreements = 0
    for _ in range(300):
        own, newcomer, location = (rng.randbytes(ID_SIZE) for _ in range(3))
        known = [rng.randbytes(ID_SIZE) for _ in range(K)]
        expected = expected_handover(own, known, newcomer, location)
        assert protocol_for(own, known)._should_hand_over(Node(newcomer), location) == expected
        disagreements += await stock_handover(own, known, newcomer, location) != expected
    assert disagreements > 10  # the stock code measured distances to digest(location)
