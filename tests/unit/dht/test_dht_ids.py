"""DHT ids share the pools' key space: a pool's shepherd is its record's nearest replica."""

from __future__ import annotations

import random

from sdmesh.dht.ids import ID_SIZE, as_key, distance, location_of, node_id_for
from sdmesh.pools.ownership import shepherd


def test_ids_are_160_bits() -> None:
    assert len(location_of(b"pool")) == ID_SIZE
    assert len(node_id_for("host-1")) == ID_SIZE
    assert node_id_for("host-1") == node_id_for("host-1") != node_id_for("host-2")


def test_str_keys_mean_their_utf8_bytes() -> None:
    assert as_key("pool/é") == "pool/é".encode()
    assert location_of(as_key("pool/é")) == location_of("pool/é".encode())


def test_the_shepherd_is_the_dht_node_nearest_the_pool_record() -> None:
    rng = random.Random(3)
    members = [f"host-{n}" for n in range(50)]
    for n in range(200):
        pool = f"pool-{rng.random()}-{n}"
        nearest = min(members, key=lambda m: distance(node_id_for(m), location_of(pool.encode())))
        assert shepherd(pool, members) == nearest
