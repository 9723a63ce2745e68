"""The DHT as the rest of sdmesh uses it: start, bootstrap, put, get, stop.

Runs on its own UDP port (membership gossip has another), sealed by the same
:class:`~sdmesh.transport.TransportSecurity`, and bootstraps from the same peer hosts as
membership, at the DHT port.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterable
from typing import Any

from sdmesh.dht.config import DhtConfig
from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.ids import ID_SIZE, as_key, location_of, random_node_id
from sdmesh.dht.lookup import Contact
from sdmesh.dht.protocol import contact_of
from sdmesh.dht.records import MAX_VERSION, DhtRecord, RecordAuthority
from sdmesh.dht.server import DhtServer
from sdmesh.dht.state import DhtState
from sdmesh.dht.storage import Admission
from sdmesh.transport import TransportSecurity


class Dht:
    """One node of the cluster's DHT.

    Give it ``node_id=node_id_for(member name)`` so a restarted host keeps its place in the
    key space (and so a pool's shepherd is its records' nearest replica); the default is a
    random id.
    """

    def __init__(self, config: DhtConfig | None = None, *, node_id: bytes | None = None) -> None:
        if node_id is not None and len(node_id) != ID_SIZE:
            raise ValueError(f"node id must be {ID_SIZE} bytes (see node_id_for)")
        self.config = config or DhtConfig()
        self.node_id = node_id if node_id is not None else random_node_id()
        self.counters = DhtCounters()
        """RPCs sent/received, timeouts, refusals; ``counters.drops`` are transport drops."""
        self._server: DhtServer | None = None
        self._last_sequence = 0

    async def start(self, bind_addr: tuple[str, int], security: TransportSecurity) -> None:
        """Bind ``bind_addr`` (an IP; port 0 picks one) and start serving."""
        if self._server is not None:
            raise RuntimeError("already started")
        _require_ip(bind_addr)
        # Frames are addressed to node ids: ours names this node (dropped elsewhere).
        codec = security.new_codec(max_frame=self.config.max_datagram, identity=self.node_id)
        server = DhtServer(
            self.config,
            node_id=self.node_id,
            authority=RecordAuthority.from_security(security),
            codec=codec,
            counters=self.counters,
        )
        await server.listen(bind_addr[1], bind_addr[0])
        self._server = server

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(ip, port)``."""
        sockname = self._running.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    async def bootstrap(self, peers: Iterable[tuple[str, int]]) -> list[Contact]:
        """Join through ``peers`` (DHT ``(ip, port)``s, never names; our own is skipped).

        Returns the closest nodes found; an empty list means none answered.
        """
        own = self.address
        seeds = [(str(peer[0]), int(peer[1])) for peer in peers if tuple(peer) != own]
        for seed in seeds:
            _require_ip(seed)
        return await self._running.bootstrap(seeds)

    async def put(
        self, key: bytes | str, value: bytes, generation: int, *, sequence: int | None = None
    ) -> int:
        """Write a new version of ``key``; returns how many of its k closest nodes took it.

        The sequence defaults to a hybrid clock (wall-clock milliseconds, strictly increasing
        per node), so within one generation a later write wins even from another writer;
        whoever must win regardless (a new shepherd) bumps the generation. A replica holding
        a newer version refuses, so 0 means the write lost (or nobody answered).
        Raises ``RecordError`` (a ``ValueError``) for an oversized value or a bad version.
        """
        server = self._running
        record = DhtRecord(
            key=as_key(key),
            value=bytes(value),
            generation=generation,
            sequence=self._next_sequence() if sequence is None else sequence,
            writer=self.node_id,
            timestamp_ms=int(time.time() * 1000),
        )
        return await server.store_record(server.authority.authenticate(record))

    async def get(self, key: bytes | str, *, quorum: int | None = None) -> DhtRecord | None:
        """The newest authenticated version of ``key`` among the answers, or ``None``.

        By default the lookup hears from all of the key's k closest live nodes. With
        ``quorum=q`` it returns as soon as q answers carry the record and every copy seen so
        far is the same version: much faster when dead nodes are among the closest, and still
        the newest whenever fewer than q replicas hold an older copy (any disagreement makes
        the lookup go on to the end).
        """
        if quorum is not None and quorum < 1:
            raise ValueError("quorum must be at least 1")
        return await self._running.find_record(location_of(as_key(key)), quorum=quorum)

    def stop(self) -> None:
        """Close the socket and cancel background work; peers notice by timeouts only."""
        if self._server is not None:
            self._server.stop()

    def local_record(self, key: bytes | str) -> DhtRecord | None:
        """The version this node itself holds (no network)."""
        server = self._running
        return server.storage.get(location_of(as_key(key)), time.monotonic())

    def set_admission(self, admit: Admission | None) -> None:
        """Have this node keep and read only the records ``admit`` takes (see ``Admission``):
        a refused version does not replace the one held, and a lookup ignores refused copies
        (counted in ``counters.bad_records`` and ``refused_stores``)."""
        self._running.storage.admit = admit

    def contacts(self) -> list[Contact]:
        """Every contact in the routing table."""
        return [contact_of(node) for node in self._running.proto.router.contacts()]

    def state(self) -> DhtState:
        neighbors = self._running.bootstrappable_neighbors()
        return DhtState(self.node_id, tuple((str(ip), int(port)) for ip, port in neighbors))

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the node id and some neighbours as JSON (never pickle); see ``DhtState``."""
        self.state().save(path)

    @property
    def server(self) -> DhtServer:
        """The underlying ``kademlia`` server subclass (for inspection and tests)."""
        return self._running

    @property
    def _running(self) -> DhtServer:
        if self._server is None:
            raise RuntimeError("the DHT node is not started")
        return self._server

    def _next_sequence(self) -> int:
        self._last_sequence = min(
            MAX_VERSION, max(self._last_sequence + 1, int(time.time() * 1000))
        )
        return self._last_sequence


def _require_ip(addr: tuple[Any, ...]) -> None:
    try:
        ipaddress.ip_address(addr[0])
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"address must be (ip, port), got {addr!r}") from exc
