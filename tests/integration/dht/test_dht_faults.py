"""Outsiders, forged records, dead nodes and newcomers: the DHT under the conditions it must survive."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

from dht_support import (
    FOREIGN_KEY,
    eventually,
    k_closest,
    security,
    start_cluster,
    start_node,
    stop_all,
    tolerant_config,
)

from sdmesh.dht import Contact, Decision, RecordAuthority, location_of
from sdmesh.dht.protocol import node_of


async def test_a_node_with_the_wrong_cluster_key_can_neither_read_nor_write() -> None:
    nodes = await start_cluster(10)
    outsider = await start_node(sec=security(FOREIGN_KEY))
    try:
        await nodes[2].put("pool/secret", b"inside", generation=1)
        assert await outsider.bootstrap([n.address for n in nodes[:3]]) == []
        assert await outsider.get("pool/secret") is None
        assert await outsider.put("pool/secret", b"outside", generation=99) <= 1  # itself only
        for node in nodes:
            record = await node.get("pool/secret")
            assert record is not None and record.value == b"inside"
        assert nodes[0].counters.drops.unknown_key > 0
        assert all(node.counters.requests_received == 0 for node in [outsider])
    finally:
        stop_all([*nodes, outsider])


async def test_records_authenticated_under_a_foreign_key_are_refused_by_every_holder() -> None:
    """An insider relaying a record it did not get from the cluster (the transport is fine,
    the record is not): every replica refuses it and keeps the newer genuine version."""
    nodes = await start_cluster(10)
    try:
        await nodes[1].put("pool/f", b"genuine", generation=1)
        genuine = await nodes[4].get("pool/f")
        assert genuine is not None
        foreign = RecordAuthority(security(FOREIGN_KEY).keyring, cluster="it")
        forged = foreign.authenticate(dataclasses.replace(genuine, value=b"forged", generation=9))
        tampered = dataclasses.replace(genuine, value=b"tampered", generation=9)
        relay = nodes[5].server.proto
        for holder in k_closest(nodes, "pool/f", 10):
            if holder is nodes[5]:
                continue
            target = node_of(Contact(holder.node_id, *holder.address))
            for bad in (forged, tampered):
                assert await relay.call_store(target, location_of(b"pool/f"), bad.encode()) is (
                    Decision.UNAUTHENTICATED
                )
            assert await relay.call_store(target, location_of(b"pool/x"), genuine.encode()) is (
                Decision.INVALID  # offered under another key's location
            )
            assert await relay.call_store(target, location_of(b"pool/f"), b"junk") is (
                Decision.INVALID
            )
        record = await nodes[8].get("pool/f")
        assert record is not None and record.value == b"genuine"
        assert sum(node.counters.refused_stores for node in nodes) >= 4 * 9
    finally:
        stop_all(nodes)


async def test_gets_succeed_fast_with_ten_percent_of_nodes_dead() -> None:
    nodes = await start_cluster(30)
    rng = random.Random(1)
    try:
        keys = [f"pool/{n}" for n in range(10)]
        for key in keys:
            await rng.choice(nodes).put(key, key.encode(), generation=1)
        dead = rng.sample(nodes[1:], 3)
        for node in dead:
            node.stop()
        live = [node for node in nodes if node not in dead]
        latencies = []
        for _ in range(40):
            key = rng.choice(keys)
            start = time.perf_counter()
            record = await rng.choice(live).get(key)
            latencies.append(time.perf_counter() - start)
            assert record is not None and record.value == key.encode()
        # Not a benchmark (see bench/dht_latency.py): only far below the stock package's 5 s
        # per dead peer, with room for a loaded test machine.
        assert max(latencies) < 2.5
    finally:
        stop_all(nodes)


async def test_a_newly_joined_node_among_the_k_closest_receives_the_keys() -> None:
    config = tolerant_config(ksize=4)
    nodes = await start_cluster(16, config)
    try:
        keys = [f"pool/{n}" for n in range(48)]
        for n, key in enumerate(keys):
            assert await nodes[n % 16].put(key, key.encode(), generation=1) == 4
        newcomer = await start_node(config)
        await newcomer.bootstrap([nodes[0].address])
        everyone = [*nodes, newcomer]
        owed = [key for key in keys if newcomer in k_closest(everyone, key, 4)]
        assert owed, "no key for the newcomer; pick another seed"
        await eventually(lambda: all(newcomer.local_record(key) for key in owed))
        assert sum(node.counters.handovers for node in nodes) >= len(owed)
    finally:
        stop_all([*nodes, newcomer])


async def test_a_contact_that_stops_answering_is_kept_until_a_replacement_exists() -> None:
    nodes = await start_cluster(6)
    try:
        victim = nodes[3]
        victim.stop()
        asker = nodes[1]
        for n in range(4):
            await asker.get(f"pool/{n}")  # each lookup times out on the victim once
        await asyncio.sleep(0.1)
        assert asker.server.failures.failures(victim.node_id) >= 3
        assert victim.node_id in {c.id for c in asker.contacts()}  # no replacement: kept
        assert victim.node_id not in {c.id for c in asker.server.proto.neighbors(b"\x00" * 20)}
    finally:
        stop_all(nodes)


async def test_a_record_put_by_a_node_that_then_died_is_still_read() -> None:
    nodes = await start_cluster(12, tolerant_config(ksize=5))
    try:
        writer = nodes[4]
        assert await writer.put("pool/orphan", b"v", generation=1) == 5
        writer.stop()
        for holder in k_closest([n for n in nodes if n is not writer], "pool/orphan", 2):
            holder.stop()  # two of the replicas die too
        survivors = [n for n in nodes if n.server.transport and not n.server.transport.is_closing()]
        for node in survivors:
            record = await node.get("pool/orphan")
            assert record is not None and record.value == b"v"
    finally:
        stop_all(nodes)
