"""Who looks after a pool: the live member closest to the pool's key (XOR distance).

Every agent computes the same answer from its membership view, so there is no election
(shared/spec/architecture.md). Keys are SHA-256 of the pool id and of member names, the same
space the DHT stores pool records in; the order of the other members by distance is the order
in which they take over when the shepherd dies or leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def key_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def by_distance(pool: str, members: Iterable[str]) -> list[str]:
    """Members ordered by XOR distance to the pool's key, closest first (ties by name)."""
    target = key_of(pool)
    return sorted(set(members), key=lambda name: (key_of(name) ^ target, name))


def shepherd(pool: str, live_members: Iterable[str]) -> str | None:
    """The pool's shepherd in this view, or None when no member is live."""
    ordered = by_distance(pool, live_members)
    return ordered[0] if ordered else None
