"""The ``kademlia`` protocol on sdmesh's sealed transport: adaptive timeouts, checked stores.

Subclasses :class:`kademlia.protocol.KademliaProtocol` (itself an ``rpcudp.RPCProtocol``).
What stays from the package: the protocol's life cycle under ``Server.listen``, the routing
table and its buckets, refresh ids. What is replaced, and why, is said on each override;
in short, ``rpcudp`` offers no hook for the wire format or for the per-request timeout (it
reads ``self._wait_timeout`` inline), so the request/response plumbing is overridden whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar, cast

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from sdmesh.dht import wire
from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.eviction import FailureCounter
from sdmesh.dht.ids import distance
from sdmesh.dht.lookup import Contact
from sdmesh.dht.records import Decision, DhtRecord, RecordAuthority, RecordError
from sdmesh.dht.routing import HardenedRoutingTable
from sdmesh.dht.rtt import RttTable
from sdmesh.dht.sealed import SealedDatagramTransport
from sdmesh.dht.storage import RecordStore
from sdmesh.transport import FrameCodec

logger = logging.getLogger(__name__)

T = TypeVar("T")
Address = tuple[str, int]
_MAX_TIMED_OUT = 1024


@dataclasses.dataclass(slots=True)
class _Pending:
    future: asyncio.Future[wire.Response | None]
    timer: asyncio.TimerHandle
    address: Address
    sent_at: float
    node_id: bytes | None


def address_of(node: Node) -> Address:
    return (node.ip, node.port)


def contact_of(node: Node) -> Contact:
    return Contact(node.id, node.ip, node.port)


def node_of(contact: Contact) -> Node:
    return Node(contact.id, contact.ip, contact.port)


class DhtProtocol(KademliaProtocol):  # type: ignore[misc]  # kademlia is untyped
    """One node's RPC endpoint: answers ping/store/find_node/find_value, makes calls."""

    def __init__(
        self,
        source_node: Node,
        storage: RecordStore,
        ksize: int,
        *,
        codec: FrameCodec,
        authority: RecordAuthority,
        rtt: RttTable,
        failures: FailureCounter,
        counters: DhtCounters,
        max_handovers: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = HardenedRoutingTable(self, ksize, source_node, failures)
        self.storage: RecordStore = storage
        self.ksize = ksize
        self.authority = authority
        self.rtt = rtt
        self.failures = failures
        self.counters = counters
        self.counters.drops = codec.counters  # the codec counts what it refuses to open
        self.transport: SealedDatagramTransport | None = None
        self._codec = codec
        self._clock = clock
        self._inflight: dict[bytes, _Pending] = {}
        self._timed_out: OrderedDict[bytes, _Pending] = OrderedDict()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._store_slots = asyncio.Semaphore(max_handovers)

    def __getattr__(self, name: str) -> NoReturn:
        """Why we override this: rpcudp turns every attribute it does not know into a remote
        call (``self.anything(addr, ...)`` sends an umsgpack frame), which would hide typos and
        bypass the wire format; here an unknown attribute is an ``AttributeError``."""
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- transport --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Why we override this: every send must be sealed, so handlers get the wrapper."""
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        datagrams = cast(asyncio.DatagramTransport, transport)
        self.transport = SealedDatagramTransport(datagrams, self._codec)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def error_received(self, exc: Exception) -> None:
        self.counters.socket_errors += 1
        logger.debug("DHT socket error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Why we override this: open the sealed frame first (dropping and counting what fails)
        and handle it inline; rpcudp parses umsgpack from anyone in a new task."""
        if self.transport is None:
            return
        opened = self.transport.open(data)
        if opened is None:
            return
        try:
            rpc = wire.parse(opened.obj)
        except wire.MalformedRpc as exc:
            self.counters.malformed += 1
            logger.debug("malformed DHT message from %s: %s", addr, exc)
            return
        if not opened.addressed and not (isinstance(rpc, wire.Request) and rpc.method == wire.PING):
            # Only a bootstrap ping goes out before its target's id is known; anything else
            # unaddressed is a frame replayed from elsewhere (or a broken peer).
            self.transport.refuse_unaddressed()
            return
        address: Address = (addr[0], addr[1])
        if isinstance(rpc, wire.Response):
            self._accept_response(rpc.msg_id, rpc, address)
        else:
            self._accept_request(rpc.msg_id, rpc, address)

    def close(self) -> None:
        """Fail every outstanding request and stop background stores."""
        for pending in self._inflight.values():
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(None)
        self._inflight.clear()
        for task in list(self._tasks):
            task.cancel()

    # -- serving ----------------------------------------------------------------------------

    def _accept_request(self, msg_id: bytes, request: wire.Request, address: Address) -> None:
        """Why we override this: dispatch only the four DHT methods (rpcudp calls any
        ``rpc_*`` a peer names, ``rpc_stun`` included), synchronously, and reply with our node
        id so callers notice an address that changed hands."""
        self.counters.requests_received += 1
        handler = getattr(self, "rpc_" + request.method)  # one of wire.METHODS, checked
        try:
            result = handler(address, request.sender, *request.args)
        except Exception:
            logger.exception("bug: DHT handler %s failed", request.method)
            return
        assert self.transport is not None
        reply = wire.response(msg_id, self.source_node.id, result)
        if self.transport.sendto(reply, address, request.sender):
            self.counters.responses_sent += 1
        else:
            self.counters.send_errors += 1

    def rpc_ping(self, sender: Address, nodeid: bytes) -> bytes:
        self._heard_from(Node(nodeid, sender[0], sender[1]))
        return bytes(self.source_node.id)

    def rpc_store(self, sender: Address, nodeid: bytes, key: bytes, value: bytes) -> str:
        """Why we override this: the stock handler stores any value under any key; here the
        record must decode, name ``key`` as its location, authenticate, and be newer."""
        self._heard_from(Node(nodeid, sender[0], sender[1]))
        try:
            record = DhtRecord.decode(value)
        except RecordError as exc:
            logger.debug("refused a malformed record from %s: %s", sender, exc)
            decision = Decision.INVALID
        else:
            decision = self.storage.offer(key, record, self._clock())
        if not decision.accepted:
            self.counters.refused_stores += 1
        return decision.value

    def rpc_find_node(self, sender: Address, nodeid: bytes, key: bytes) -> list[list[Any]]:
        self._heard_from(Node(nodeid, sender[0], sender[1]))
        return wire.encode_contacts(self.neighbors(key, exclude=nodeid))

    def rpc_find_value(self, sender: Address, nodeid: bytes, key: bytes) -> dict[str, Any]:
        """Why we override this: answer with the closest contacts as well as the record, so a
        lookup can go on past the first holder and read every replica's version."""
        self._heard_from(Node(nodeid, sender[0], sender[1]))
        entry = self.storage.entry(key, self._clock())
        nodes = self.neighbors(key, exclude=nodeid)
        return wire.value_answer(nodes, entry.encoded if entry else None)

    def neighbors(self, target: bytes, *, exclude: bytes | None = None) -> list[Contact]:
        """The k closest live contacts to ``target`` (never ``exclude``, never stale ones)."""
        found = self.router.find_neighbors(Node(target), self.ksize + 1, include_stale=False)
        return [contact_of(node) for node in found if node.id != exclude][: self.ksize]

    def _heard_from(self, node: Node) -> None:
        """An authenticated request proves the sender is alive right now."""
        if node.id == self.source_node.id:
            return
        self.failures.succeeded(node.id)
        self.welcome_if_new(node)

    # -- calling ----------------------------------------------------------------------------

    def request(
        self, address: Address, method: str, *args: bytes, node_id: bytes | None = None
    ) -> asyncio.Future[wire.Response | None]:
        """Send one call; the future gets the reply, or ``None`` after this contact's timeout.

        Why this replaces rpcudp's ``__getattr__`` calls: those frame with umsgpack and arm a
        fixed ``_wait_timeout`` (5 s) timer; this one seals and uses the RTT estimate.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[wire.Response | None] = loop.create_future()
        msg_id = secrets.token_bytes(wire.MSG_ID_SIZE)
        message = wire.request(msg_id, method, self.source_node.id, *args)
        if self.transport is None or not self.transport.sendto(message, address, node_id):
            self.counters.send_errors += 1
            future.set_result(None)
            return future
        self.counters.requests_sent += 1
        timer = loop.call_later(self.rtt.timeout_for(address), self._timeout, msg_id)
        self._inflight[msg_id] = _Pending(future, timer, address, self._clock(), node_id)
        return future

    def _accept_response(self, msg_id: bytes, response: wire.Response, address: Address) -> None:
        """Why we override this: check the reply comes from the address asked, measure the
        round trip, and take late replies as RTT samples (see ``rtt.py``)."""
        pending = self._inflight.get(msg_id)
        if pending is None:
            late = self._timed_out.pop(msg_id, None)
            if late is None or late.address != address:
                self.counters.unexpected_responses += 1
                return
            self.counters.late_responses += 1
            self.rtt.sample(address, self._clock() - late.sent_at)
            if late.node_id is not None and late.node_id == response.responder:
                self.failures.succeeded(late.node_id)
            return
        if pending.address != address:
            self.counters.unexpected_responses += 1
            return  # the real reply may still come
        del self._inflight[msg_id]
        pending.timer.cancel()
        self.counters.responses_received += 1
        self.rtt.sample(address, self._clock() - pending.sent_at)
        if not pending.future.done():
            pending.future.set_result(response)

    def _timeout(self, msg_id: bytes) -> None:
        """Why we override this: the stock one logs an error per timeout and keeps no trace;
        this one remembers the request so a late reply still measures the path."""
        pending = self._inflight.pop(msg_id, None)
        if pending is None:
            return
        self.counters.timeouts += 1
        self._timed_out[msg_id] = pending
        if len(self._timed_out) > _MAX_TIMED_OUT:
            self._timed_out.popitem(last=False)
        if not pending.future.done():
            pending.future.set_result(None)

    async def ask(
        self, node: Node, method: str, *args: bytes, parse: Callable[[Any], T]
    ) -> T | None:
        """Call ``node``, check who answered and what, and update its health either way."""
        response = await self.request(address_of(node), method, *args, node_id=node.id)
        parsed: T | None = None
        if response is not None:
            if response.responder != node.id:
                self.counters.identity_mismatches += 1
            else:
                try:
                    parsed = parse(response.result)
                except wire.MalformedRpc as exc:
                    self.counters.malformed += 1
                    logger.debug("malformed %s answer from %s: %s", method, node, exc)
        self.handle_call_response((parsed is not None, parsed), node)
        return parsed

    async def call_ping(self, node_to_ask: Node) -> bytes | None:
        return await self.ask(node_to_ask, wire.PING, parse=wire.parse_node_id)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> Decision | None:
        return await self.ask(node_to_ask, wire.STORE, key, value, parse=wire.parse_decision)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> list[Contact] | None:
        return await self.ask(
            node_to_ask, wire.FIND_NODE, node_to_find.id, parse=wire.parse_contacts
        )

    async def call_find_value(
        self, node_to_ask: Node, node_to_find: Node
    ) -> wire.ValueAnswer | None:
        return await self.ask(
            node_to_ask, wire.FIND_VALUE, node_to_find.id, parse=wire.parse_value_answer
        )

    async def ping_address(self, address: Address) -> bytes | None:
        """Ping an address whose node id we do not know yet (bootstrap); returns its id."""
        response = await self.request(address, wire.PING)
        if response is None:
            return None
        try:
            node_id = wire.parse_node_id(response.result)
        except wire.MalformedRpc:
            self.counters.malformed += 1
            return None
        if node_id != response.responder or node_id == self.source_node.id:
            return None
        self.handle_call_response((True, node_id), Node(node_id, address[0], address[1]))
        return node_id

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        """Why we override this: the stock one drops a contact from the table on its first
        unanswered request; here failures are counted and eviction waits for N in a row and a
        replacement (``HardenedRoutingTable.contact_failed``)."""
        if node.id == self.source_node.id:
            return result
        if not result[0]:
            self.router.contact_failed(node)
            return result
        self.failures.succeeded(node.id)
        self.welcome_if_new(node)
        return result

    # -- handover ---------------------------------------------------------------------------

    def welcome_if_new(self, node: Node) -> None:
        """Add a newly seen node, first handing it the records it is now a closest node for.

        Why we override this: the stock version hashes each stored key again
        (``Node(digest(key))``) although storage is already keyed by the digest, so it
        measured every distance to the wrong point and handed over the wrong keys; it also
        compared the newcomer with the k-th neighbour when fewer than k were known (then the
        newcomer is among the k closest whatever its distance). The rule is the paper's
        (section 2.5): send a record if the newcomer is among its k closest and this node is
        closer to it than any other node it knows, so exactly one node sends each record.

        A newcomer never measured is pinged once: a node that so far only answered requests
        has no RTT samples, and its first lookup would otherwise wait the initial 1 s on
        every dead contact.
        """
        if node.id == self.source_node.id or not self.router.is_new_node(node):
            return
        for location, record in self.storage.items():
            if self._should_hand_over(node, location):
                self.counters.handovers += 1
                self.spawn(self.push_record(node, location, record))
        self.router.add_contact(node)
        if self.rtt.estimator(address_of(node)) is None:
            self.spawn(self.call_ping(node))  # measure it before a lookup has to wait on it

    def _should_hand_over(self, newcomer: Node, location: bytes) -> bool:
        neighbors = self.router.find_neighbors(Node(location), self.ksize, include_stale=False)
        if not neighbors:
            return True
        if len(neighbors) >= self.ksize and distance(newcomer.id, location) >= distance(
            neighbors[-1].id, location
        ):
            return False
        return distance(self.source_node.id, location) < distance(neighbors[0].id, location)

    async def push_record(self, node: Node, location: bytes, record: DhtRecord) -> Decision | None:
        """Store ``record`` on ``node`` (at most ``max_handovers`` at once), re-authenticated
        under the current primary key if it was written under an older one."""
        if not self.authority.is_current(record):
            record = self.authority.authenticate(record)
        async with self._store_slots:
            return await self.call_store(node, location, record.encode())

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run in the background, holding a reference until done (cancelled by ``close``)."""
        self.adopt(asyncio.ensure_future(coroutine))

    def adopt(self, task: asyncio.Future[Any]) -> None:
        """Keep a running task alive (and its errors logged) until it finishes."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("DHT background task failed", exc_info=task.exception())
