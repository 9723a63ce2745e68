"""Who looks after a pool: the live member closest to the pool's key (XOR distance).

Every agent computes the same answer from its membership view, so there is no election
(shared/spec/architecture.md). Keys are SHA-256 of the pool id and of member names, the same
space the DHT stores pool records in; the order of the other members by distance is the order
in which they take over when the shepherd dies or leaves.

An agent shepherds only while a strict majority of the mesh is alive in its view, suspects
not counted (:func:`has_quorum`): a host cut off from the others would otherwise soon find
itself the closest live member of every pool, take them over and boot every VM a second time
on its side of the partition, or move VMs off the hosts it declares dead one by one.
:class:`QuorumGate` adds hysteresis: a majority lost for a moment pauses nothing, a pause
keeps each shepherd's state, so flaps cost no generation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

#: How long an agent may see no majority before its shepherds pause (a suspicion refuted
#: within it costs nothing). Well under the shortest time to a death verdict (the minimum
#: suspicion timeout, 2 s at the default probe interval, more without confirmations), and a
#: death seen without a majority pauses at once (:class:`QuorumGate`).
QUORUM_HOLD = 1.5

#: Member metadata flag of a witness (``sdmesh join --witness``): a member with no
#: hypervisor that votes (majority, leases) but never shepherds a pool or hosts a VM.
WITNESS_KEY = "witness"


def is_witness(meta: object) -> bool:
    """True for a member whose gossiped metadata says it is a witness."""
    return isinstance(meta, dict) and meta.get(WITNESS_KEY) is True


def shepherd_candidates(members: Iterable[tuple[str, object]]) -> frozenset[str]:
    """The names among ``(name, meta)`` pairs that may shepherd a pool: witnesses only vote.
    Pass these, not every live member, to :func:`shepherd`, :class:`Owners` and
    :func:`successors`; the majority rule (:func:`has_quorum`) still counts witnesses."""
    return frozenset(name for name, meta in members if not is_witness(meta))


@lru_cache(maxsize=1 << 16)
def key_of(text: str) -> int:
    """Cached: every view event asks for the key of every member and known pool."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def by_distance(pool: str, members: Iterable[str]) -> list[str]:
    """Members ordered by XOR distance to the pool's key, closest first (ties by name)."""
    target = key_of(pool)
    return sorted(set(members), key=lambda name: (key_of(name) ^ target, name))


def shepherd(pool: str, live_members: Iterable[str]) -> str | None:
    """The pool's shepherd in this view, or None when no member is live."""
    ordered = by_distance(pool, live_members)
    return ordered[0] if ordered else None


def successors(
    pool: str, live_members: Iterable[str], leaving: str, suspects: Iterable[str] = ()
) -> list[str]:
    """Who shepherds the pool once ``leaving`` is gone, then who would if that one cannot:
    the rest of the live members by distance. A leaving shepherd hands over to the first.
    ``suspects`` go last: one that does not answer must not use up the hand-over's time."""
    doubtful = set(suspects)
    ordered = [name for name in by_distance(pool, live_members) if name != leaving]
    return [n for n in ordered if n not in doubtful] + [n for n in ordered if n in doubtful]


class Owners:
    """The shepherd of each pool in one view of the live members, memoized: a view event
    that changes no member's liveness (capacity gossip) must not rehash every pool."""

    def __init__(self, members: Iterable[str]) -> None:
        self.members = frozenset(members)
        self._keys = sorted((key_of(name), name) for name in self.members)
        self._memo: dict[str, str | None] = {}

    def shepherd(self, pool: str) -> str | None:
        if pool in self._memo:
            return self._memo[pool]
        target = key_of(pool)
        best = min(self._keys, key=lambda kn: (kn[0] ^ target, kn[1]), default=None)
        found = self._memo[pool] = best[1] if best is not None else None
        return found


def has_quorum(alive: int, counted: int) -> bool:
    """True when ``alive`` members are a strict majority of ``counted`` (every member not
    known to have left gracefully, ourselves included: dead ones may be alive on the other
    side of a partition). Only one side of a partition can have it; an even split leaves
    neither side moving VMs until it heals."""
    return counted > 0 and 2 * alive > counted


class QuorumGate:
    """Whether shepherds may act, with hysteresis on the majority rule.

    A majority lost for less than ``hold`` seconds changes nothing (a suspicion refuted at
    once must not pause every pool); lost longer, or lost while a member is newly declared
    dead (the verdict the cut-off side must never act on), shepherds pause until it is back.
    Pausing keeps their state: resuming costs no generation."""

    def __init__(self, hold: float = QUORUM_HOLD) -> None:
        self.hold = hold
        self.lost_since: float | None = None
        self.paused = False
        self._dead: frozenset[str] = frozenset()

    def observe(self, quorate: bool, dead: Iterable[str], now: float) -> bool:
        """Feed one view (``dead``: members declared dead in it); True while they may act."""
        dead = frozenset(dead)
        newly_dead = bool(dead - self._dead)
        self._dead = dead
        if quorate:
            self.lost_since = None
            self.paused = False
        else:
            if self.lost_since is None:
                self.lost_since = now
            if newly_dead or now - self.lost_since >= self.hold:
                self.paused = True
        return not self.paused

    def recheck_at(self) -> float | None:
        """When to look again: the hold runs out without another view event."""
        if self.paused or self.lost_since is None:
            return None
        return self.lost_since + self.hold
