"""``kademlia.network.Server`` with the hardened protocol, concurrent lookups and versioned records.

What stays from the package: construction of the node, ``listen`` (which builds the protocol
through ``protocol_class``/``_create_protocol``), ``stop``, ``bootstrappable_neighbors``.
Operations that moved raw values (``get``, ``set``, ``set_digest``) and the pickled state
(``save_state``/``load_state``) are overridden; each override says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from kademlia.network import Server
from kademlia.node import Node

from sdmesh.dht.config import DhtConfig
from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.crawl import run_lookup
from sdmesh.dht.eviction import FailureCounter
from sdmesh.dht.ids import ID_BITS, ID_SIZE, distance
from sdmesh.dht.lookup import Contact, Lookup
from sdmesh.dht.protocol import DhtProtocol, node_of
from sdmesh.dht.records import (
    DhtRecord,
    RecordAuthority,
    RecordError,
    accept,
    newest,
    precedence,
)
from sdmesh.dht.rtt import RttTable
from sdmesh.dht.state import DhtState
from sdmesh.dht.storage import RecordStore
from sdmesh.transport import FrameCodec

logger = logging.getLogger(__name__)

JOIN_WIDTH = 2
"""A joining node's own-id lookup reaches JOIN_WIDTH * k nodes (see ``bootstrap``)."""


class DhtServer(Server):  # type: ignore[misc]  # kademlia is untyped
    """One DHT node: its routing table, its records, and the lookups it runs."""

    protocol_class = DhtProtocol

    def __init__(
        self,
        config: DhtConfig,
        *,
        node_id: bytes,
        authority: RecordAuthority,
        codec: FrameCodec,
        counters: DhtCounters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        storage = RecordStore(
            node_id,
            authority,
            max_records=config.max_records,
            max_bytes=config.max_bytes,
            ttl=config.record_ttl,
        )
        super().__init__(ksize=config.ksize, alpha=config.alpha, node_id=node_id, storage=storage)
        self.storage: RecordStore = storage
        self.config = config
        self.authority = authority
        self.counters = counters
        self.rtt = RttTable(config.rtt)
        self.failures = FailureCounter(config.max_failures, retry_after=config.stale_retry_after)
        self.protocol: DhtProtocol | None = None
        self._codec = codec
        self._clock = clock

    def _create_protocol(self) -> DhtProtocol:
        """Why we override this: the stock factory passes only (node, storage, ksize)."""
        protocol: DhtProtocol = self.protocol_class(
            self.node,
            self.storage,
            self.ksize,
            codec=self._codec,
            authority=self.authority,
            rtt=self.rtt,
            failures=self.failures,
            counters=self.counters,
            max_handovers=self.config.max_handovers,
            clock=self._clock,
        )
        return protocol

    @property
    def proto(self) -> DhtProtocol:
        if self.protocol is None:
            raise RuntimeError("the DHT node is not listening (call start first)")
        return self.protocol

    def stop(self) -> None:
        if self.protocol is not None:
            self.protocol.close()
        super().stop()

    # -- lookups ----------------------------------------------------------------------------

    async def lookup_nodes(self, target: bytes, *, width: int | None = None) -> list[Contact]:
        """The ``width`` (default k) closest live nodes to ``target``, not counting this one."""
        protocol = self.proto
        lookup = Lookup(
            target,
            protocol.neighbors(target),
            k=width or self.ksize,
            alpha=self.alpha,
            own_id=self.node.id,
        )
        wanted = Node(target)

        async def query(contact: Contact) -> list[Contact] | None:
            found = await protocol.call_find_node(node_of(contact), wanted)
            return None if found is None else self._usable(found)

        return await run_lookup(lookup, query, protocol.adopt)

    async def find_record(self, location: bytes, *, quorum: int | None = None) -> DhtRecord | None:
        """The newest authenticated record among this node's and the k closest nodes' copies.

        Why not ``ValueSpiderCrawl``: it stops at the first answers carrying a value and keeps
        the most common one, so a stale replica could win; this lookup asks the k closest
        and keeps the highest version. Closest nodes found holding an older copy or none are
        repaired in the background (the paper's caching step, made version-aware).
        """
        protocol = self.proto
        held: dict[bytes, DhtRecord | None] = {}
        wanted = Node(location)

        async def query(contact: Contact) -> list[Contact] | None:
            answer = await protocol.call_find_value(node_of(contact), wanted)
            if answer is None:
                return None
            held[contact.id] = self._checked(answer.record, location)
            return self._usable(answer.contacts)

        lookup = Lookup(
            location,
            protocol.neighbors(location),
            k=self.ksize,
            alpha=self.alpha,
            own_id=self.node.id,
        )

        def enough() -> bool:
            if quorum is None:
                return False
            found = [record for record in held.values() if record is not None]
            return len(found) >= quorum and len({precedence(r) for r in found}) == 1

        closest = await run_lookup(lookup, query, protocol.adopt, enough=enough)
        local = self.storage.get(location, self._clock())
        best = newest([record for record in [local, *held.values()] if record is not None])
        if best is not None:
            held[self.node.id] = local
            self._repair(location, best, closest, held, complete=lookup.finished)
        return best

    def _usable(self, contacts: list[Contact]) -> list[Contact]:
        """Contacts from an answer, minus those this node found stale itself."""
        router = self.proto.router
        return [contact for contact in contacts if not router.is_stale(contact.id)]

    def _checked(self, encoded: bytes | None, location: bytes) -> DhtRecord | None:
        if encoded is None:
            return None
        try:
            record = DhtRecord.decode(encoded)
        except RecordError:
            self.counters.bad_records += 1
            return None
        if not accept(None, record, self.authority, location=location).accepted:
            self.counters.bad_records += 1
            return None
        admit = self.storage.admit
        if admit is not None and not admit(record):  # a forgery must not win the lookup
            self.counters.bad_records += 1
            return None
        return record

    def _repair(
        self,
        location: bytes,
        best: DhtRecord,
        closest: list[Contact],
        held: dict[bytes, DhtRecord | None],
        *,
        complete: bool,
    ) -> None:
        """Give ``best`` to the replicas found holding an older copy, or none.

        After a lookup stopped early (a quorum read), the nodes that answered are not known
        to be the k closest, so only older copies are replaced, not missing ones filled in.
        """
        protocol = self.proto
        rank = precedence(best)
        for contact in self._replica_set(closest, location):
            theirs = held.get(contact.id)
            if theirs is None and not complete:
                continue
            if theirs is not None and precedence(theirs) >= rank:
                continue
            if contact.id == self.node.id:
                self.storage.offer(location, best, self._clock())
            else:
                self.counters.read_repairs += 1
                protocol.spawn(protocol.push_record(node_of(contact), location, best))

    def _replica_set(self, closest: list[Contact], location: bytes) -> list[Contact]:
        """The k closest of the nodes found and this one: where a record belongs."""
        me = Contact(self.node.id, "", 0)
        ranked = sorted([*closest, me], key=lambda contact: distance(contact.id, location))
        return ranked[: self.ksize]

    # -- writing ----------------------------------------------------------------------------

    async def store_record(self, record: DhtRecord) -> int:
        """Offer ``record`` to the k closest nodes (this one included if it is among them).

        Returns how many accepted it; the others hold a newer version, or were unreachable.
        """
        protocol = self.proto
        location = record.location
        closest = await self.lookup_nodes(location)
        encoded = record.encode()
        stored = 0
        remote: list[Contact] = []
        for contact in self._replica_set(closest, location):
            if contact.id == self.node.id:
                stored += self.storage.offer(location, record, self._clock()).accepted
            else:
                remote.append(contact)
        decisions = await asyncio.gather(
            *(protocol.call_store(node_of(contact), location, encoded) for contact in remote)
        )
        return stored + sum(1 for d in decisions if d is not None and d.accepted)

    async def republish(self, record: DhtRecord) -> int:
        if not self.authority.is_current(record):
            record = self.authority.authenticate(record)
        self.counters.republished += 1
        return await self.store_record(record)

    # -- joining and upkeep -----------------------------------------------------------------

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> list[Contact]:
        """Ping the seeds, look up this node's own id, refresh the farther buckets.

        Why we override this: handover only works if the nodes that must hand records over
        hear from the newcomer, and the stock join (one lookup of the k closest) often misses
        them. For a key whose k closest now include the newcomer N, the holder H that sends
        it is closest to the key; both lie in the smallest subtree around the key that holds
        its k closest, so H is among the nodes nearest N, but not always among the k nearest:
        simulating 100 random nodes with k = 20, H was outside N's 20 nearest for 620 of
        11,903 such keys, and outside its 40 nearest for none. So the own-id lookup here
        reaches the 2k nearest. Refreshing the buckets farther than the nearest one is the
        paper's join (section 2.3)."""
        protocol = self.proto
        await asyncio.gather(*(protocol.ping_address((ip, port)) for ip, port in addrs))
        found = await self.lookup_nodes(self.node.id, width=JOIN_WIDTH * self.ksize)
        far = [b for b in protocol.router.buckets if not b.has_in_range(self.node)]
        await asyncio.gather(*(self.lookup_nodes(_random_id(b.range)) for b in far))
        return found[: self.ksize]

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        node_id = await self.proto.ping_address(addr)
        return Node(node_id, addr[0], addr[1]) if node_id is not None else None

    def refresh_table(self, interval: float | None = None) -> None:
        """Why we override this: the stock timer runs ``_refresh_table`` hourly with no way to
        tune it or stop its task; this runs upkeep every ``maintenance_interval``."""
        self.refresh_loop = asyncio.get_running_loop().create_task(self._upkeep())

    async def _upkeep(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            try:
                await self._refresh_table()
            except Exception:
                logger.exception("DHT upkeep failed")

    async def _refresh_table(self) -> None:
        """Expire, refresh quiet buckets, republish what is due.

        Why we override this: the stock one republishes every value older than an hour with
        ``set_digest`` (raw values, no versions) and crawls round by round.
        """
        protocol = self.proto
        self.storage.expire(self._clock())
        quiet = protocol.router.stale_buckets(self.config.refresh_interval)
        await asyncio.gather(*(self.lookup_nodes(_random_id(b.range)) for b in quiet))
        now = self._clock()
        for location, record in self.storage.due_for_republish(now, self.config.republish_interval):
            await self.republish(record)
            self.storage.mark_republished(location, self._clock())

    def save_state(self, fname: str | os.PathLike[str]) -> None:
        """Why we override this: the stock one pickles; this writes JSON (see ``state.py``)."""
        neighbors = tuple((str(ip), int(port)) for ip, port in self.bootstrappable_neighbors())
        DhtState(self.node.id, neighbors).save(fname)

    @classmethod
    async def load_state(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """Why we override this: the stock one unpickles. Use ``DhtState.load`` and pass its
        ``node_id`` and ``neighbors`` to ``Dht``."""
        raise NotImplementedError("use DhtState.load(path) with Dht(node_id=...).bootstrap(...)")

    async def get(self, key: Any) -> NoReturn:
        """Why we override this: the stock one returns a raw value, the local one first even
        if stale. Use ``Dht.get``/``find_record``."""
        raise NotImplementedError("use Dht.get(key)")

    async def set(self, key: Any, value: Any) -> NoReturn:
        """Why we override this: the stock one stores an unversioned, unauthenticated value."""
        raise NotImplementedError("use Dht.put(key, value, generation)")

    async def set_digest(self, dkey: Any, value: Any) -> NoReturn:
        raise NotImplementedError("use Dht.put(key, value, generation)")


def _random_id(bounds: tuple[int, int]) -> bytes:
    """A random id inside a bucket's (inclusive) range."""
    low, high = bounds
    return random.randint(low, min(high, (1 << ID_BITS) - 1)).to_bytes(ID_SIZE, "big")
