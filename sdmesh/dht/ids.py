"""Identifiers in the DHT's 160-bit key space, and the XOR metric between them.

The space is 160 bits because that is what the ``kademlia`` package's routing table is built
for (``KBucket(0, 2**160)``, 20-byte refresh ids). Ids are the top 160 bits of the SHA-256
that ``sdmesh.pools.ownership`` uses for pool ids and member names, so when a node's DHT id
is derived from its member name, XOR order agrees between the two: a pool's shepherd is
also the nearest replica of the pool's records.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

ID_SIZE: Final = 20
ID_BITS: Final = ID_SIZE * 8


def location_of(key: bytes) -> bytes:
    """Where ``key`` lives: its record is kept by the k nodes whose ids are closest to this."""
    return hashlib.sha256(key).digest()[:ID_SIZE]


def node_id_for(name: str) -> bytes:
    """A stable node id from a member name (a restarted host keeps its place and records)."""
    return location_of(name.encode("utf-8"))


def random_node_id() -> bytes:
    return secrets.token_bytes(ID_SIZE)


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia XOR metric."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def as_key(key: bytes | str) -> bytes:
    """Application keys are bytes on the wire; a ``str`` key means its UTF-8 encoding."""
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def is_node_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_SIZE
