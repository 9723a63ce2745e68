"""A node's share of the DHT: records it accepted, bounded, expiring, and due for republishing.

Replaces the package's ``ForgetfulStorage``, which keeps any value any peer sends, has no size
bound, and re-sends everything older than an hour. Every offer here goes through
:func:`~sdmesh.dht.records.accept`. When the store is full, the record whose location is
farthest from this node goes first: it is the one this node is least likely to be among the
k closest for, so other replicas are the most likely to cover it. Time is passed in (``now``,
monotonic seconds), so the store is deterministic to test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from sdmesh.dht.ids import distance
from sdmesh.dht.records import Decision, DhtRecord, RecordAuthority, accept

DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_TTL = 24 * 3600.0

Admission = Callable[[DhtRecord], bool]
"""Whether the application takes a record the cluster key authenticated (a pool record
proven by a writer entitled to it, say): anyone holding the key can write any version, so
without this a forgery at a higher version replaces the genuine record on every replica and
wins every lookup."""


@dataclasses.dataclass(slots=True)
class StoredRecord:
    record: DhtRecord
    encoded: bytes
    stored_at: float
    """Last time any node stored this version here (a STORE or DUPLICATE)."""
    republished_at: float
    """Last time this node pushed it to the current closest nodes."""

    @property
    def size(self) -> int:
        return len(self.encoded)


class RecordStore:
    """Records by location (``location_of(record.key)``)."""

    def __init__(
        self,
        own_id: bytes,
        authority: RecordAuthority,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        if max_records < 1 or max_bytes < 1 or ttl <= 0:
            raise ValueError("storage bounds and ttl must be positive")
        self.own_id = own_id
        self.authority = authority
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._entries: dict[bytes, StoredRecord] = {}
        self._bytes = 0
        self.admit: Admission | None = None
        """Consulted before a new version is kept here, and by lookups for every copy read
        (sdmesh.dht.server): one refused neither replaces the record held nor is returned."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, location: object) -> bool:
        return location in self._entries

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def offer(self, location: bytes, record: DhtRecord, now: float) -> Decision:
        """Store ``record`` if :func:`accept` says so and there is room for it."""
        entry = self._entries.get(location)
        if entry is not None and self._expired(entry, now):
            self._remove(location)
            entry = None
        decision = accept(
            entry.record if entry else None, record, self.authority, location=location
        )
        if not decision.accepted:
            return decision
        if decision is Decision.STORE and self.admit is not None and not self.admit(record):
            return Decision.UNAUTHENTICATED
        encoded = record.encode()
        if entry is None:
            if not self._make_room(location, len(encoded), now):
                return Decision.NO_ROOM
        else:
            growth = len(encoded) - entry.size
            if growth > 0 and not self._fits_after_growth(location, growth):
                self._remove(location)  # never keep serving the version this one replaces
                return Decision.NO_ROOM
            self._bytes -= entry.size
        republished_at = entry.republished_at if entry else now
        self._entries[location] = StoredRecord(record, encoded, now, republished_at)
        self._bytes += len(encoded)
        return decision

    def get(self, location: bytes, now: float) -> DhtRecord | None:
        entry = self.entry(location, now)
        return entry.record if entry else None

    def entry(self, location: bytes, now: float) -> StoredRecord | None:
        entry = self._entries.get(location)
        if entry is None:
            return None
        if self._expired(entry, now):
            self._remove(location)
            return None
        return entry

    def expire(self, now: float) -> int:
        """Drop every record not stored by anyone for ``ttl``; returns how many went."""
        gone = [loc for loc, entry in self._entries.items() if self._expired(entry, now)]
        for location in gone:
            self._remove(location)
        return len(gone)

    def due_for_republish(self, now: float, interval: float) -> list[tuple[bytes, DhtRecord]]:
        """Records neither stored nor republished here for ``interval``.

        A record some node stored here recently was just pushed to the closest nodes by that
        node, so republishing it too would only repeat the traffic (paper, section 2.5).
        """
        return [
            (location, entry.record)
            for location, entry in self._entries.items()
            if now - max(entry.stored_at, entry.republished_at) >= interval
            and not self._expired(entry, now)
        ]

    def mark_republished(self, location: bytes, now: float) -> None:
        entry = self._entries.get(location)
        if entry is not None:
            entry.republished_at = now

    def discard(self, location: bytes) -> bool:
        """Forget a record (an operator's or a test's decision; peers may store it again)."""
        if location not in self._entries:
            return False
        self._remove(location)
        return True

    def items(self) -> Iterator[tuple[bytes, DhtRecord]]:
        """Snapshot of ``(location, record)`` pairs (safe to store into while iterating)."""
        return iter([(location, entry.record) for location, entry in self._entries.items()])

    def _expired(self, entry: StoredRecord, now: float) -> bool:
        return now - entry.stored_at >= self.ttl

    def _remove(self, location: bytes) -> None:
        entry = self._entries.pop(location)
        self._bytes -= entry.size

    def _make_room(self, location: bytes, size: int, now: float) -> bool:
        """Free a slot and ``size`` bytes for a new location by dropping farther records."""
        if size > self.max_bytes:
            return False
        self.expire(now)
        return self._fits_after_growth(location, size, new_entry=True)

    def _fits_after_growth(self, location: bytes, growth: int, *, new_entry: bool = False) -> bool:
        """Evict records farther than ``location`` until ``growth`` more bytes fit."""
        mine = distance(self.own_id, location)
        count = len(self._entries) + (1 if new_entry else 0)
        while count > self.max_records or self._bytes + growth > self.max_bytes:
            candidates = [loc for loc in self._entries if loc != location]
            farthest = max(candidates, key=lambda loc: distance(self.own_id, loc), default=None)
            if farthest is None or distance(self.own_id, farthest) <= mine:
                return False
            self._remove(farthest)
            count -= 1
        return True
