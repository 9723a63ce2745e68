"""The dissemination queue: updates waiting to be piggybacked, with a retransmit budget.

SWIM disseminates by infection: every member re-sends each update it learns a bounded number
of times (``retransmit_limit``), on the datagrams it sends anyway. Updates sent fewer times go
first and, among equals, the newest first, so fresh news spreads before old news is repeated.
A newer update about a member replaces the queued one: it supersedes it by incarnation order.
Rumors share the queue and its budget, keyed by ``(topic, key)``: a newer value of a rumor
likewise replaces the queued older one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdmesh.membership.messages import GossipMessage
from sdmesh.membership.wire import packed_size

QueueKey = str | tuple[str, str]
"""A member name, or a rumor's ``(topic, key)``."""

SMALLEST_UPDATE_BYTES = 12
"""No update encodes smaller than this; stop filling a datagram once less room remains."""


@dataclass(slots=True)
class _Queued:
    key: QueueKey
    message: GossipMessage
    size: int
    order: int
    transmits: int = 0


class BroadcastQueue:
    """Pending updates, one per member name."""

    def __init__(self) -> None:
        self._by_key: dict[QueueKey, _Queued] = {}
        self._levels: dict[int, dict[int, _Queued]] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: QueueKey) -> bool:
        return key in self._by_key

    def enqueue(self, key: QueueKey, message: GossipMessage) -> None:
        """Queue ``message`` about ``key``, replacing any older update about it."""
        self._drop(key)
        self._order += 1
        item = _Queued(key, message, packed_size(message.to_wire()), self._order)
        self._by_key[key] = item
        self._levels.setdefault(0, {})[item.order] = item

    def take(self, budget: int, limit: int, max_count: int) -> list[tuple[GossipMessage, int]]:
        """Pick updates totalling at most ``budget`` encoded bytes, count one transmission for
        each, and retire those that reached ``limit`` transmissions.

        Returns ``(message, encoded size)`` pairs.
        """
        chosen: list[_Queued] = []
        room = budget
        for level in sorted(self._levels):
            if room < SMALLEST_UPDATE_BYTES or len(chosen) >= max_count:
                break
            bucket = self._levels[level]
            for order in sorted(bucket, reverse=True):
                item = bucket[order]
                if item.size <= room:
                    chosen.append(item)
                    room -= item.size
                    if room < SMALLEST_UPDATE_BYTES or len(chosen) >= max_count:
                        break
        for item in chosen:
            self._move(item, item.transmits + 1, limit)
        return [(item.message, item.size) for item in chosen]

    def clear(self) -> None:
        self._by_key.clear()
        self._levels.clear()

    def _move(self, item: _Queued, transmits: int, limit: int) -> None:
        bucket = self._levels[item.transmits]
        del bucket[item.order]
        if not bucket:
            del self._levels[item.transmits]
        if transmits >= limit:
            del self._by_key[item.key]
            return
        item.transmits = transmits
        self._levels.setdefault(transmits, {})[item.order] = item

    def _drop(self, key: QueueKey) -> None:
        item = self._by_key.pop(key, None)
        if item is None:
            return
        bucket = self._levels[item.transmits]
        del bucket[item.order]
        if not bucket:
            del self._levels[item.transmits]
