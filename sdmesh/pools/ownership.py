"""Who looks after a pool: the live member closest to the pool's key (XOR distance).

Every agent computes the same answer from its membership view, so there is no election
(shared/spec/architecture.md). Keys are SHA-256 of the pool id and of member names, the same
space the DHT stores pool records in; the order of the other members by distance is the order
in which they take over when the shepherd dies or leaves.

An agent shepherds only while a strict majority of the mesh is alive in its view, suspects
not counted (:func:`has_quorum`): a host cut off from the others would otherwise soon find
itself the closest live member of every pool, take them over and boot every VM a second time
on its side of the partition, or move VMs off the hosts it declares dead one by one.
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


def successors(pool: str, live_members: Iterable[str], leaving: str) -> list[str]:
    """Who shepherds the pool once ``leaving`` is gone, then who would if that one cannot:
    the rest of the live members by distance. A leaving shepherd hands over to the first."""
    return [name for name in by_distance(pool, live_members) if name != leaving]


def has_quorum(alive: int, counted: int) -> bool:
    """True when ``alive`` members are a strict majority of ``counted`` (every member not
    known to have left gracefully, ourselves included: dead ones may be alive on the other
    side of a partition). Only one side of a partition can have it; an even split leaves
    neither side moving VMs until it heals."""
    return counted > 0 and 2 * alive > counted
