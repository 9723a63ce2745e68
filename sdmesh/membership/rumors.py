"""The rumor map: last writer wins per ``(topic, key)``, bounded in size and in age.

Kept apart from the core like the member table. Ages come from the core's clock: each entry
remembers when it was published on our clock (the ``now`` we learned it, less the age the
sender reported), so expiry needs no clock of its own and happens at about the same moment on
every member.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass

from sdmesh.membership.messages import Rumor
from sdmesh.membership.wire import MAX_UINT32, packed_size

RumorKey = tuple[str, str]
"""``(topic, key)``."""


@dataclass(slots=True)
class Held:
    """One rumor we keep, with what push-pull needs to send it."""

    rumor: Rumor
    published: float
    """Publication time on our clock: the time we learned it, less its age back then."""
    size: int
    """Encoded size of its push-pull entry with the widest age, for the stream budget."""


def age_since(published: float, now: float) -> int:
    """A rumor's age for the wire: whole seconds, rounded up so relaying never rejuvenates."""
    return min(MAX_UINT32, max(0, math.ceil(now - published)))


class RumorStore:
    """The map, a Lamport clock, and an index of entries by age for eviction."""

    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.clock = 0
        """Highest Lamport time seen in any rumor (ours or anyone's)."""
        self._held: dict[RumorKey, Held] = {}
        # Min-heap of (rank, key), oldest first. Entries go stale when a key takes a newer
        # value or is dropped; they are skipped when met and purged when they pile up.
        self._by_rank: list[tuple[tuple[int, str, bytes], RumorKey]] = []

    def __len__(self) -> int:
        return len(self._held)

    def get(self, topic: str, key: str) -> Rumor | None:
        held = self._held.get((topic, key))
        return held.rumor if held is not None else None

    def rumors(self, topic: str | None = None) -> list[Rumor]:
        """Current rumors (of ``topic`` only, if given), sorted by topic and key."""
        found = [
            held.rumor for held in self._held.values() if topic is None or held.rumor.topic == topic
        ]
        found.sort(key=lambda rumor: (rumor.topic, rumor.key))
        return found

    def newest_first(self, now: float) -> Iterator[Held]:
        """Unexpired entries, newest (by Lamport time) first: what push-pull sends."""
        for held in sorted(self._held.values(), key=lambda h: h.rumor.rank, reverse=True):
            if now - held.published < self.ttl:
                yield held

    def offer(self, rumor: Rumor, published: float, now: float) -> bool:
        """Take ``rumor`` if it is newer than what we hold for its key; True if taken.

        Whatever the outcome, the clock moves past its Lamport time. An expired rumor is
        refused, and so is one older than everything we hold when the map is full: it would
        be the next one evicted.
        """
        self.clock = max(self.clock, rumor.ltime)
        if now - published >= self.ttl:
            return False
        key = (rumor.topic, rumor.key)
        current = self._held.get(key)
        if current is not None:
            if rumor.rank <= current.rumor.rank:
                return False
        elif len(self._held) >= self.capacity:
            oldest = self._oldest()
            if oldest is not None and rumor.rank <= oldest.rumor.rank:
                return False
        size = packed_size([*rumor.fields(), MAX_UINT32])
        self._held[key] = Held(rumor, published, size)
        heapq.heappush(self._by_rank, (rumor.rank, key))
        while len(self._held) > self.capacity:
            oldest = self._oldest()
            assert oldest is not None
            self._drop(oldest)
        if len(self._by_rank) > 2 * len(self._held) + 64:
            self._by_rank = [(held.rumor.rank, key) for key, held in self._held.items()]
            heapq.heapify(self._by_rank)
        return True

    def expire(self, now: float) -> int:
        """Forget rumors older than the ttl; returns how many."""
        old = [held for held in self._held.values() if now - held.published >= self.ttl]
        for held in old:
            self._drop(held)
        return len(old)

    def _oldest(self) -> Held | None:
        heap = self._by_rank
        while heap:
            rank, key = heap[0]
            held = self._held.get(key)
            if held is not None and held.rumor.rank == rank:
                return held
            heapq.heappop(heap)
        return None

    def _drop(self, held: Held) -> None:
        del self._held[(held.rumor.topic, held.rumor.key)]
