"""A deterministic discrete-event simulator driving many membership cores.

Events sit in a heap ordered by ``(time, sequence)``; the sequence number breaks ties in
insertion order, and all randomness comes from ``Random`` objects seeded from the simulator's
seed, so a run is a pure function of its seed and script. The simulator is a *driver* in the
sense of ``sdmesh.membership``: it turns the cores' actions into scheduled deliveries and timer
firings, exactly as the asyncio agent does with real sockets and the event loop.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from sdmesh.membership import (
    Action,
    Address,
    CancelTimer,
    Event,
    ForceLeave,
    JoinRequested,
    LeaveCompleted,
    LeaveRequested,
    Member,
    Membership,
    MembershipConfig,
    Meta,
    MetaUpdated,
    OpenStream,
    PacketMessage,
    Preload,
    Publish,
    PushPull,
    Received,
    ReplyStream,
    Send,
    SetTimer,
    Start,
    StreamFailed,
    StreamReceived,
    TimerFired,
    decode_packet,
    decode_stream,
)
from sdmesh.sim.network import Network, NetworkConfig

Listener = Callable[[float, "SimNode", Action], None]
"""Called with (time, node, action) for every action that is a report rather than I/O
(member events, join and leave results)."""

_TIMER = 0
_DATAGRAM = 1
_STREAM_REQUEST = 2
_STREAM_REPLY = 3
_STREAM_FAILED = 4
_CALL = 5


@dataclass(slots=True)
class SimNode:
    """One simulated host: a core plus what its driver would hold (timers, liveness)."""

    name: str
    addr: Address
    meta: Meta
    core: Membership
    running: bool = False
    epoch: int = 0
    """Bumped at each crash or restart, so deliveries meant for a previous life are dropped."""
    generation: int = 0
    timers: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Counters:
    events: int = 0
    datagrams: int = 0
    datagrams_lost: int = 0
    datagrams_oversize: int = 0
    streams: int = 0
    streams_failed: int = 0
    max_datagram_bytes: int = 0


class Simulator:
    """Many ``Membership`` cores on a simulated network.

    Script a scenario by calling ``add_node``, ``crash``, ``restart``, ``partition``... between
    ``run_until`` calls; observe it through ``listeners`` and the cores' query methods. With
    ``wire=True`` every datagram and stream goes through msgpack and ``decode`` as it would
    between real agents (slower; catches encoding bugs and measures real datagram sizes).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        config: MembershipConfig | None = None,
        network: NetworkConfig | None = None,
        wire: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config if config is not None else MembershipConfig()
        self.network = Network(network or NetworkConfig(), random.Random(f"network:{seed}"))
        self.wire = wire
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.listeners: list[Listener] = []
        self.counters = Counters()
        self._by_addr: dict[Address, SimNode] = {}
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._order = itertools.count()
        self._streams: dict[int, tuple[SimNode, int, Address]] = {}
        self._stream_ids = itertools.count(1)
        self._hosts = itertools.count(1)

    # ------------------------------------------------------------------ scripting

    def add_node(
        self,
        name: str,
        *,
        meta: Meta | None = None,
        addr: Address | None = None,
        join: Iterable[Address] = (),
        preload: Iterable[Member] = (),
        incarnation: int = 0,
    ) -> SimNode:
        """Create and start a node now, optionally preloaded with a view or joining seeds."""
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        addr = addr or self._new_address()
        meta = dict(meta or {})
        node = SimNode(name, addr, meta, self._new_core(name, addr, meta, incarnation, 0))
        self.nodes[name] = node
        self._boot(node, tuple(join), tuple(preload))
        return node

    def crash(self, name: str) -> None:
        """Stop the node dead (``kill -9``): no more sending, receiving or timers."""
        node = self.nodes[name]
        node.running = False
        node.epoch += 1
        node.timers.clear()

    def restart(
        self,
        name: str,
        *,
        new_address: bool = False,
        join: Iterable[Address] = (),
        incarnation: int = 0,
    ) -> SimNode:
        """Boot a fresh core for a crashed node, possibly on a new address."""
        node = self.nodes[name]
        if node.running:
            self.crash(name)
        if new_address:
            if self._by_addr.get(node.addr) is node:
                del self._by_addr[node.addr]
            node.addr = self._new_address()
        node.generation += 1
        node.core = self._new_core(name, node.addr, node.meta, incarnation, node.generation)
        self._boot(node, tuple(join), ())
        return node

    def leave(self, name: str) -> None:
        self.feed(self.nodes[name], LeaveRequested())

    def force_leave(self, name: str, member: str) -> None:
        """An operator at ``name`` forces the failed ``member`` out (listeners get the
        ``ForceLeaveResult``)."""
        self.feed(self.nodes[name], ForceLeave(member))

    def update_meta(self, name: str, meta: Meta) -> None:
        node = self.nodes[name]
        node.meta = dict(meta)
        self.feed(node, MetaUpdated(dict(meta)))

    def publish(self, name: str, topic: str, key: str, payload: bytes) -> None:
        self.feed(self.nodes[name], Publish(topic, key, payload))

    def call_at(self, at: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at simulated time ``at`` (for scripted changes inside a run)."""
        self._push(at, _CALL, None, fn)

    def running_nodes(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.running]

    # ------------------------------------------------------------------ running

    def run_until(self, until: float) -> None:
        """Process every event up to and including time ``until``."""
        heap = self._heap
        pop = heapq.heappop
        counters = self.counters
        while heap and heap[0][0] <= until:
            at, _, kind, target, payload = pop(heap)
            self.now = at
            counters.events += 1
            if kind == _TIMER:
                name, token = payload
                if target.timers.get(name) == token:
                    del target.timers[name]
                    self.feed(target, TimerFired(name))
            elif kind == _DATAGRAM:
                epoch, src_addr, message = payload
                if target.running and target.epoch == epoch:
                    self.feed(target, Received(src_addr, message))
            else:
                self._other_event(kind, target, payload)
        self.now = max(self.now, until)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def feed(self, node: SimNode, event: Event) -> None:
        """Hand ``event`` to the node's core now and carry out its actions."""
        if node.running:
            self._execute(node, node.core.handle(event, self.now))

    # ------------------------------------------------------------------ internals

    def _other_event(self, kind: int, target: Any, payload: Any) -> None:
        if kind == _STREAM_REQUEST:
            epoch, initiator, initiator_epoch, addr, message, stream_id = payload
            if not (target.running and target.epoch == epoch):
                self._fail_stream(initiator, initiator_epoch, addr)
                return
            self._streams[stream_id] = (initiator, initiator_epoch, addr)
            self.feed(target, StreamReceived(initiator.addr, message, stream_id))
        elif kind == _STREAM_REPLY:
            epoch, addr, message = payload
            if target.running and target.epoch == epoch:
                self.feed(target, StreamReceived(addr, message))
        elif kind == _STREAM_FAILED:
            epoch, addr = payload
            if target.running and target.epoch == epoch:
                self.feed(target, StreamFailed(addr))
        elif kind == _CALL:
            payload()

    def _execute(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                self._send(node, action.addr, action.message)
            elif kind is SetTimer:
                assert isinstance(action, SetTimer)
                token = next(self._order)
                node.timers[action.name] = token
                self._push(max(action.at, self.now), _TIMER, node, (action.name, token))
            elif kind is CancelTimer:
                assert isinstance(action, CancelTimer)
                node.timers.pop(action.name, None)
            elif kind is OpenStream:
                assert isinstance(action, OpenStream)
                self._open_stream(node, action.addr, action.message)
            elif kind is ReplyStream:
                assert isinstance(action, ReplyStream)
                self._reply_stream(node, action.stream_id, action.message)
            else:
                if kind is LeaveCompleted:
                    node.running = False
                    node.epoch += 1
                    node.timers.clear()
                for listener in self.listeners:
                    listener(self.now, node, action)

    def _send(self, node: SimNode, addr: Address, message: PacketMessage) -> None:
        counters = self.counters
        counters.datagrams += 1
        if self.wire:
            data = msgpack.packb(message.to_wire())
            counters.max_datagram_bytes = max(counters.max_datagram_bytes, len(data))
            if len(data) > self.config.max_datagram_bytes:
                counters.datagrams_oversize += 1
            message = decode_packet(msgpack.unpackb(data))
        dst = self._by_addr.get(addr)
        if dst is None or not dst.running or not self.network.delivers(node.name, dst.name):
            counters.datagrams_lost += 1
            return
        at = self.now + self.network.delay(node.name, dst.name)
        self._push(at, _DATAGRAM, dst, (dst.epoch, node.addr, message))

    def _open_stream(self, node: SimNode, addr: Address, message: PushPull) -> None:
        self.counters.streams += 1
        message = self._through_wire(message)
        dst = self._by_addr.get(addr)
        if dst is None or not dst.running or not self.network.connected(node.name, dst.name):
            self._fail_stream(node, node.epoch, addr)
            return
        stream_id = next(self._stream_ids)
        payload = (dst.epoch, node, node.epoch, addr, message, stream_id)
        self._push(self.now + self.network.config.stream_latency, _STREAM_REQUEST, dst, payload)

    def _reply_stream(self, node: SimNode, stream_id: int, message: PushPull) -> None:
        entry = self._streams.pop(stream_id, None)
        if entry is None:
            return
        initiator, epoch, addr = entry
        message = self._through_wire(message)
        at = self.now + self.network.config.stream_latency
        self._push(at, _STREAM_REPLY, initiator, (epoch, addr, message))

    def _fail_stream(self, node: SimNode, epoch: int, addr: Address) -> None:
        self.counters.streams_failed += 1
        at = self.now + self.network.config.stream_timeout
        self._push(at, _STREAM_FAILED, node, (epoch, addr))

    def _through_wire(self, message: PushPull) -> PushPull:
        if not self.wire:
            return message
        return decode_stream(msgpack.unpackb(msgpack.packb(message.to_wire())))

    def _push(self, at: float, kind: int, target: Any, payload: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._order), kind, target, payload))

    def _new_core(
        self, name: str, addr: Address, meta: Meta, incarnation: int, generation: int
    ) -> Membership:
        rng = random.Random(f"core:{self.seed}:{name}:{generation}")
        return Membership(self.config, Member(name, addr, incarnation, meta=meta), rng)

    def _boot(self, node: SimNode, join: tuple[Address, ...], preload: tuple[Member, ...]) -> None:
        node.running = True
        node.epoch += 1
        node.timers.clear()
        self._by_addr[node.addr] = node
        if preload:
            self.feed(node, Preload(preload))
        self.feed(node, Start())
        if join:
            self.feed(node, JoinRequested(join))

    def _new_address(self) -> Address:
        index = next(self._hosts)
        return (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 7946)
