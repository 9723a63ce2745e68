"""Contacts survive lost replies: stale after N failures in a row, evicted only for a replacement."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from kademlia.node import Node

from sdmesh.dht.eviction import FailureCounter
from sdmesh.dht.ids import ID_SIZE
from sdmesh.dht.routing import HardenedRoutingTable


def node_id(n: int) -> bytes:
    return n.to_bytes(ID_SIZE, "big")


def node(n: int) -> Node:
    return Node(node_id(n), "127.0.0.1", 10000 + n % 50000)


class FakeProtocol:
    """Records the pings the stock ``add_contact`` sends to a full bucket's head."""

    def __init__(self) -> None:
        self.pinged: list[Any] = []

    async def call_ping(self, contact: Any) -> None:
        self.pinged.append(contact)


def test_stale_only_after_threshold_consecutive_failures() -> None:
    counter = FailureCounter(3)
    a = node_id(1)
    assert counter.failed(a, 0.0) == 1
    assert counter.failed(a, 0.0) == 2
    assert not counter.is_stale(a, 0.0)
    assert counter.failed(a, 0.0) == 3
    assert counter.is_stale(a, 0.0)


def test_a_success_resets_the_count() -> None:
    counter = FailureCounter(3)
    a = node_id(1)
    counter.failed(a, 0.0)
    counter.failed(a, 0.0)
    counter.succeeded(a)
    counter.failed(a, 0.0)
    assert counter.failures(a) == 1
    assert not counter.is_stale(a, 0.0)


def test_stale_contact_may_be_probed_again_after_retry_after() -> None:
    counter = FailureCounter(2, retry_after=30.0)
    a = node_id(1)
    counter.failed(a, 100.0)
    counter.failed(a, 100.0)
    assert counter.is_stale(a, 129.0)
    assert not counter.is_stale(a, 130.0)
    counter.failed(a, 131.0)  # the probe failed too
    assert counter.is_stale(a, 150.0)


def test_eviction_needs_both_threshold_and_replacement() -> None:
    counter = FailureCounter(3)
    a = node_id(1)
    for _ in range(2):
        counter.failed(a, 0.0)
    assert not counter.should_evict(a, has_replacement=True)
    counter.failed(a, 0.0)
    assert not counter.should_evict(a, has_replacement=False)
    assert counter.should_evict(a, has_replacement=True)


def test_counter_is_bounded() -> None:
    counter = FailureCounter(3, max_tracked=10)
    for n in range(100):
        counter.failed(node_id(n), 0.0)
    assert len(counter) == 10


def far(n: int) -> Node:
    """Ids starting 0b10000, then ``n`` in the next 5 bits (so the stock split rule, which
    splits a bucket whose shared prefix is not a multiple of 5, leaves the bucket whole)."""
    return node((0b10000 << 155) | (n << 150))


def full_far_bucket_table() -> tuple[HardenedRoutingTable, list[Node], FakeProtocol]:
    """A table for node 0 whose far bucket (ids with the top bit set) is full, ksize 4."""
    protocol = FakeProtocol()
    table = HardenedRoutingTable(protocol, 4, node(0), FailureCounter(3))
    near = [node(n) for n in range(1, 5)]
    far_ones = [far(n) for n in (0b00001, 0b00010, 0b10000, 0b10001)]
    for contact in near + far_ones:
        table.add_contact(contact)
    assert len(table.buckets) == 2
    return table, far_ones, protocol


async def test_one_failure_does_not_evict_even_with_a_replacement_waiting() -> None:
    table, far_nodes, _ = full_far_bucket_table()
    table.add_contact(far(0b00111))  # bucket full: goes to the replacement cache
    victim = far_nodes[0]
    assert not table.contact_failed(victim)
    assert not table.contact_failed(victim)
    assert victim.id in {c.id for c in table.contacts()}
    assert table.contact_failed(victim)  # third in a row, and a replacement waits
    ids = {c.id for c in table.contacts()}
    assert victim.id not in ids
    assert far(0b00111).id in ids
    assert table.evictions == 1


async def test_repeated_failures_without_replacement_keep_the_contact() -> None:
    table, far_nodes, _ = full_far_bucket_table()
    for _ in range(10):
        assert not table.contact_failed(far_nodes[0])
    assert far_nodes[0].id in {c.id for c in table.contacts()}
    assert far_nodes[0].id not in {
        c.id for c in table.find_neighbors(far(0b00011), 8, include_stale=False)
    }
    assert far_nodes[0].id in {c.id for c in table.find_neighbors(far(0b00011), 8)}


async def test_a_stale_member_of_a_full_bucket_gives_way_to_a_newcomer() -> None:
    table, far_nodes, protocol = full_far_bucket_table()
    for _ in range(3):
        table.contact_failed(far_nodes[1])
    newcomer = far(0b01111)
    table.add_contact(newcomer)
    await asyncio.sleep(0)
    ids = {c.id for c in table.contacts()}
    assert newcomer.id in ids and far_nodes[1].id not in ids
    assert protocol.pinged == []  # no need to ping the head: the place was free


async def test_full_bucket_of_healthy_contacts_keeps_them_and_pings_the_head() -> None:
    table, far_nodes, protocol = full_far_bucket_table()
    newcomer = far(0b01111)
    table.add_contact(newcomer)
    await asyncio.sleep(0)
    assert newcomer.id not in {c.id for c in table.contacts()}
    assert not table.is_new_node(newcomer)  # waiting in the replacement cache
    assert [c.id for c in protocol.pinged] == [far_nodes[0].id]


def test_find_neighbors_returns_the_true_xor_closest() -> None:
    rng = random.Random(7)
    own = Node(rng.randbytes(ID_SIZE))
    table = HardenedRoutingTable(FakeProtocol(), 3, own, FailureCounter(3))
    contacts = [Node(rng.randbytes(ID_SIZE), "127.0.0.1", 1 + n) for n in range(200)]
    for contact in contacts:
        table.buckets[table.get_bucket_for(contact)].add_node(contact)  # no pings needed
    known = table.contacts()
    for _ in range(50):
        target = Node(rng.randbytes(ID_SIZE))
        expected = sorted(known, key=lambda c: c.long_id ^ target.long_id)[:3]
        assert [c.id for c in table.find_neighbors(target, 3)] == [c.id for c in expected]


def test_bucket_boundary_ids_land_in_the_bucket_that_holds_them() -> None:
    table = HardenedRoutingTable(FakeProtocol(), 2, node(0), FailureCounter(3))
    table.split_bucket(0)
    low, _ = table.buckets
    midpoint = low.range[1]
    boundary = Node(midpoint.to_bytes(ID_SIZE, "big"))
    assert low.has_in_range(boundary)
    assert table.get_bucket_for(boundary) == 0


@pytest.mark.parametrize("threshold", [0, -1])
def test_threshold_must_be_positive(threshold: int) -> None:
    with pytest.raises(ValueError):
        FailureCounter(threshold)
