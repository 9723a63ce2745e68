"""A cluster of DHT nodes on 127.0.0.1: writes reach the k closest, every node reads them back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dht_support import (
    eventually,
    k_closest,
    security,
    start_cluster,
    start_node,
    stop_all,
    tolerant_config,
)

from sdmesh.dht import Dht, DhtState, location_of
from sdmesh.transport import TransportSecurity

K = 20


@pytest.fixture
async def cluster() -> AsyncIterator[list[Dht]]:
    nodes = await start_cluster(25)
    yield nodes
    stop_all(nodes)


async def test_put_from_one_node_is_read_by_every_other(cluster: list[Dht]) -> None:
    writer = cluster[3]
    assert await writer.put("pool/web", b"resolved descriptor", generation=1) == K
    for node in cluster:
        record = await node.get("pool/web")
        assert record is not None
        assert (record.value, record.generation, record.writer) == (
            b"resolved descriptor",
            1,
            writer.node_id,
        )
    # Every one of the k closest holds it (reads repair any that a busy moment made miss the
    # write); a node farther out may hold a copy too, when a closer one was slow to answer.
    closest = k_closest(cluster, "pool/web", K)
    await eventually(lambda: all(node.local_record("pool/web") for node in closest))


async def test_a_missing_key_reads_as_none(cluster: list[Dht]) -> None:
    assert await cluster[5].get("pool/nothing-here") is None


async def test_a_stale_put_never_replaces_a_newer_record(cluster: list[Dht]) -> None:
    assert await cluster[1].put("pool/db", b"gen 5", generation=5) == K
    assert await cluster[2].put("pool/db", b"gen 3", generation=3) == 0
    assert await cluster[2].put("pool/db", b"old seq", generation=5, sequence=0) == 0
    for node in cluster:
        record = await node.get("pool/db")
        assert record is not None and record.value == b"gen 5"
        local = node.local_record("pool/db")
        assert local is None or local.value == b"gen 5"
    assert await cluster[2].put("pool/db", b"gen 6", generation=6) == K
    for node in cluster:
        record = await node.get("pool/db")
        assert record is not None and record.value == b"gen 6"


async def test_later_write_in_the_same_generation_wins(cluster: list[Dht]) -> None:
    await cluster[1].put("pool/q", b"first", generation=2)
    await asyncio.sleep(0.002)  # the default sequence is a millisecond clock
    assert await cluster[9].put("pool/q", b"second", generation=2) == K
    record = await cluster[17].get("pool/q")
    assert record is not None and record.value == b"second"


async def test_a_conflicting_write_at_the_same_version_is_refused(cluster: list[Dht]) -> None:
    assert await cluster[1].put("pool/c", b"a", generation=2, sequence=100) == K
    assert await cluster[2].put("pool/c", b"b", generation=2, sequence=100) == 0
    record = await cluster[3].get("pool/c")
    assert record is not None and record.value == b"a"


async def test_replicas_that_missed_a_write_are_repaired_by_reads(cluster: list[Dht]) -> None:
    await cluster[1].put("pool/r", b"v1", generation=1)
    holder = k_closest(cluster, "pool/r", 1)[0]
    assert holder.server.storage.discard(location_of(b"pool/r"))  # lost it (e.g. restarted)
    assert holder.local_record("pool/r") is None
    reader = next(node for node in cluster if node is not holder)
    assert (await reader.get("pool/r")) is not None
    await eventually(lambda: holder.local_record("pool/r") is not None)
    assert reader.counters.read_repairs >= 1


async def test_counters_show_traffic_and_no_drops(cluster: list[Dht]) -> None:
    await cluster[0].put("pool/x", b"v", generation=1)
    counters = cluster[0].counters
    assert counters.requests_sent > 0 and counters.responses_received > 0
    assert counters.rpc_sent >= counters.requests_sent
    assert all(node.counters.drops.total == 0 for node in cluster)
    assert all(node.counters.malformed == 0 for node in cluster)


async def test_holders_republish_so_records_outlive_the_ttl() -> None:
    config = tolerant_config(
        ksize=4,
        record_ttl=1.0,
        republish_interval=0.3,
        maintenance_interval=0.1,
    )
    nodes = await start_cluster(8, config)
    try:
        await nodes[0].put("pool/long-lived", b"v", generation=1)
        await asyncio.sleep(2.0)
        record = await nodes[5].get("pool/long-lived")
        assert record is not None and record.value == b"v"
        assert sum(node.counters.republished for node in nodes) > 0
    finally:
        stop_all(nodes)


async def test_state_is_saved_as_json_and_a_restarted_node_rejoins(
    cluster: list[Dht], tmp_path: Path
) -> None:
    await cluster[1].put("pool/s", b"kept", generation=1)
    leaving = cluster[7]
    path = tmp_path / "dht.json"
    leaving.save_state(path)
    leaving.stop()
    state = DhtState.load(path)
    assert state.node_id == leaving.node_id and state.neighbors
    restarted = await start_node(node_id=state.node_id)
    try:
        assert await restarted.bootstrap(state.neighbors)
        record = await restarted.get("pool/s")
        assert record is not None and record.value == b"kept"
    finally:
        restarted.stop()


async def test_insecure_cluster_works_and_cannot_talk_to_a_keyed_one() -> None:
    insecure = await start_cluster(5, sec=TransportSecurity.insecure())
    keyed = await start_node(sec=security())
    try:
        assert await insecure[1].put("pool/i", b"v", generation=1) == 5
        record = await insecure[4].get("pool/i")
        assert record is not None and record.authenticator == b""
        assert await keyed.bootstrap([insecure[0].address]) == []
        assert insecure[0].counters.drops.bad_version > 0
    finally:
        stop_all([*insecure, keyed])


async def test_quorum_reads_return_the_newest_while_fewer_than_quorum_replicas_are_stale(
    cluster: list[Dht],
) -> None:
    await cluster[1].put("pool/qr", b"old", generation=1)
    old = await cluster[1].get("pool/qr")
    assert old is not None
    await cluster[2].put("pool/qr", b"new", generation=2)
    location = location_of(b"pool/qr")
    for replica in k_closest(cluster, "pool/qr", 2):  # the two nearest lost the new write
        replica.server.storage.discard(location)
        assert replica.server.storage.offer(location, old, time.monotonic()).accepted
        assert replica.local_record("pool/qr") == old
    for reader in cluster[3:10]:
        record = await reader.get("pool/qr", quorum=3)
        assert record is not None and record.value == b"new"
    with pytest.raises(ValueError):
        await cluster[3].get("pool/qr", quorum=0)
