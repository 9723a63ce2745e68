"""The iterative node lookup as a sans-IO state machine, with alpha requests always in flight.

The stock ``SpiderCrawl`` works in rounds: it asks alpha peers, waits for *all* of them
(``asyncio.gather``), then starts the next round; one dead peer holds every round for the
full RPC timeout. Here a new request starts as soon as any outstanding one answers or fails,
so a dead peer only occupies one of the alpha slots until its (adaptive) timeout.

A lookup keeps a shortlist ordered by XOR distance to the target. It asks the closest
contacts not yet asked, never more than ``alpha`` at a time, and is finished when the ``k``
closest contacts that have not failed have all answered (paper, section 2.3). Requests still
in flight to contacts pushed out of that set are not waited for.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from typing import NamedTuple

from sdmesh.dht.ids import distance


class Contact(NamedTuple):
    """A node as lookups see it; ``tuple(kademlia_node)`` has the same shape."""

    id: bytes
    ip: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


class _State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    ANSWERED = "answered"
    FAILED = "failed"


class Lookup:
    """Which contacts to ask next, and when the k closest live contacts are known."""

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        k: int,
        alpha: int,
        own_id: bytes | None = None,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be positive")
        self.target = target
        self.k = k
        self.alpha = alpha
        self._own_id = own_id
        self._order: list[tuple[int, bytes]] = []
        self._contacts: dict[bytes, Contact] = {}
        self._state: dict[bytes, _State] = {}
        self._in_flight = 0
        self.queries = 0
        self.add(seeds)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def add(self, contacts: Iterable[Contact]) -> None:
        """Learn contacts (from seeds or an answer); known ids and our own id are ignored."""
        for contact in contacts:
            if contact.id in self._state or contact.id == self._own_id:
                continue
            self._contacts[contact.id] = contact
            self._state[contact.id] = _State.NEW
            bisect.insort(self._order, (distance(contact.id, self.target), contact.id))

    def next_queries(self) -> list[Contact]:
        """Contacts to ask now (marked in flight): the closest unasked among the k closest."""
        chosen: list[Contact] = []
        for node_id in self._closest_live():
            if self._in_flight >= self.alpha:
                break
            if self._state[node_id] is _State.NEW:
                self._state[node_id] = _State.WAITING
                self._in_flight += 1
                self.queries += 1
                chosen.append(self._contacts[node_id])
        return chosen

    def answered(self, node_id: bytes, contacts: Iterable[Contact] = ()) -> None:
        if self._finish_request(node_id, _State.ANSWERED):
            self.add(contacts)

    def failed(self, node_id: bytes) -> None:
        self._finish_request(node_id, _State.FAILED)

    @property
    def finished(self) -> bool:
        """The k closest contacts that have not failed have all answered."""
        return all(self._state[node_id] is _State.ANSWERED for node_id in self._closest_live())

    def closest(self) -> list[Contact]:
        """The k closest contacts that answered, nearest first."""
        found: list[Contact] = []
        for _, node_id in self._order:
            if self._state[node_id] is _State.ANSWERED:
                found.append(self._contacts[node_id])
                if len(found) == self.k:
                    break
        return found

    def _closest_live(self) -> list[bytes]:
        live: list[bytes] = []
        for _, node_id in self._order:
            if self._state[node_id] is not _State.FAILED:
                live.append(node_id)
                if len(live) == self.k:
                    break
        return live

    def _finish_request(self, node_id: bytes, outcome: _State) -> bool:
        if self._state.get(node_id) is not _State.WAITING:
            return False  # not asked, or already settled: ignore (a bug elsewhere, or a dup)
        self._state[node_id] = outcome
        self._in_flight -= 1
        return True
