"""A DHT whose nodes admit only the records the application takes (``Dht.set_admission``):
a node holding the cluster key but refused by that check (a rogue) writes a forgery at the
largest version, and answers lookups with it from its own store. The replicas keep the
genuine record, and a lookup returns it, not the forgery."""

from __future__ import annotations

import asyncio

from dht_support import start_cluster, start_node, stop_all

from sdmesh.dht.records import DhtRecord

MAX = 2**63 - 1


def genuine_only(record: DhtRecord) -> bool:
    return not record.value.startswith(b"forged")


def test_a_forgery_at_the_largest_version_neither_replaces_nor_wins() -> None:
    async def scenario() -> None:
        nodes = await start_cluster(4)
        rogue = await start_node()
        try:
            for node in nodes:
                node.set_admission(genuine_only)
            await rogue.bootstrap([nodes[0].address])
            assert await nodes[1].put("pool/demo", b"genuine", 3) >= 3
            # Every replica refuses it; only the rogue's own store (no admission) keeps it.
            assert await rogue.put("pool/demo", b"forged", MAX, sequence=MAX) == 1
            assert rogue.local_record("pool/demo") is not None
            for reader in nodes:
                found = await reader.get("pool/demo")
                assert found is not None and found.value == b"genuine", found
            # The genuine writer goes on writing newer versions.
            assert await nodes[2].put("pool/demo", b"genuine again", 4) >= 3
            found = await nodes[3].get("pool/demo")
            assert found is not None and found.value == b"genuine again"
            assert sum(node.counters.bad_records for node in nodes) >= 1
        finally:
            stop_all([*nodes, rogue])

    asyncio.run(scenario())
