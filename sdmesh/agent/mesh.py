"""Runs the membership core over the sealed transport: the thin asyncio driver of SWIM.

Every decision is the core's (sdmesh.membership); this module only moves datagrams and stream
payloads, arms timers, and tells listeners what changed (members, and rumors learned).
Anything that fails to decode after the transport opened it is dropped and counted with the
transport's other drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sdmesh.membership import (
    Action,
    CancelTimer,
    Event,
    ForceLeave,
    ForceLeaveOutcome,
    ForceLeaveResult,
    JoinCompleted,
    JoinFailed,
    LeaveCompleted,
    MalformedMessage,
    MemberEvent,
    Membership,
    OpenStream,
    Publish,
    Received,
    ReplyStream,
    Rumor,
    RumorLearned,
    Send,
    SetTimer,
    StreamFailed,
    StreamReceived,
    TimerFired,
    decode_packet,
    decode_stream,
)
from sdmesh.membership.messages import PushPull
from sdmesh.transport import (
    DropReason,
    EndpointClosed,
    PayloadTooLarge,
    StreamClient,
    StreamError,
    UdpEndpoint,
)

log = logging.getLogger(__name__)

STREAM_TIMEOUT = 5.0


@dataclass
class GossipCounters:
    """What this driver received and what failed, for /metrics (the core counts what it
    sends, in ``core.stats``; the transport counts what it dropped)."""

    datagrams_received: int = 0
    streams_received: int = 0
    stream_failures: int = 0
    """Push-pulls we opened that failed (unreachable peer, timeout, bad answer)."""
    send_failures: int = 0
    """Datagrams the core asked for that could not be sent (too large)."""


class MeshNode:
    """One member of the mesh on this host."""

    def __init__(self, core: Membership, udp: UdpEndpoint, client: StreamClient) -> None:
        self.core = core
        self.udp = udp
        self.client = client
        self.listeners: list[Callable[[MemberEvent], None]] = []
        self.rumor_listeners: list[Callable[[Rumor], None]] = []
        """Called with every rumor value the core takes, our own publications included."""
        self.joined = asyncio.Event()
        self.left = asyncio.Event()
        self.join_failures: list[str] = []
        self.counters = GossipCounters()
        self._loop = asyncio.get_running_loop()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._replies: dict[int, asyncio.Future[PushPull]] = {}
        self._stream_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver = self._loop.create_task(self._receive())
        # Frames are addressed by name: tell the transport who listens at each address (the
        # stream client shares the UDP endpoint's book). Ourselves first: pools call us too.
        udp.peers.introduce(core.address, core.name)
        for member in core.members():
            udp.peers.introduce(member.addr, member.name)

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        """Tell the whole mesh ``payload`` is the latest for ``(topic, key)``.

        Raises ``ValueError`` for a topic over 32 bytes, a key over 128 or a payload over 512.
        Publish after ``joined`` is set: before that the mesh's newer values are unknown here,
        and a publication could lose to them.
        """
        self.feed(Publish(topic, key, payload))

    def force_leave(self, name: str) -> ForceLeaveResult:
        """Force the failed member ``name`` out of the mesh (``sdmesh force-leave``): the
        core's answer, its member events and gossip carried out like any other event's."""
        result = ForceLeaveResult(name, ForceLeaveOutcome.NOT_RUNNING)  # a stopped core is mute
        for action in self.core.handle(ForceLeave(name), self._loop.time()):
            if isinstance(action, ForceLeaveResult):
                result = action
            else:
                self._execute(action)
        if result.outcome is ForceLeaveOutcome.LEFT:  # an operator's act: worth an audit line
            log.warning("member %s forced out (force-leave): the mesh now counts it as left", name)
        else:
            log.info("force-leave %s: nothing done (%s)", name, result.outcome.value)
        return result

    # ------------------------------------------------------------------- the core's I/O
    def feed(self, event: Event) -> None:
        for action in self.core.handle(event, self._loop.time()):
            self._execute(action)

    def _execute(self, action: Action) -> None:
        if isinstance(action, Send):
            self._spawn(self._send(action))
        elif isinstance(action, OpenStream):
            self._spawn(self._open_stream(action))
        elif isinstance(action, ReplyStream):
            future = self._replies.pop(action.stream_id, None)
            if future is not None and not future.done():
                future.set_result(action.message)
        elif isinstance(action, SetTimer):
            old = self._timers.pop(action.name, None)
            if old is not None:
                old.cancel()
            self._timers[action.name] = self._loop.call_at(
                action.at, self.feed, TimerFired(action.name)
            )
        elif isinstance(action, CancelTimer):
            handle = self._timers.pop(action.name, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, MemberEvent):
            self.udp.peers.introduce(action.member.addr, action.member.name)
            for listener in self.listeners:
                listener(action)
        elif isinstance(action, RumorLearned):
            for rumor_listener in self.rumor_listeners:
                rumor_listener(action.rumor)
        elif isinstance(action, JoinCompleted):
            self.joined.set()
        elif isinstance(action, JoinFailed):
            shown = ", ".join(f"{host}:{port}" for host, port in action.addrs)
            self.join_failures.append(shown)
            log.warning("could not join through %s (retrying while no member answers)", shown)
        elif isinstance(action, LeaveCompleted):
            self.left.set()

    async def _send(self, action: Send) -> None:
        try:
            await self.udp.send(action.addr, action.message.to_wire())
        except PayloadTooLarge:
            self.counters.send_failures += 1
            log.error("message to %s too large for a datagram: dropped", action.addr)
        except EndpointClosed:
            pass

    async def _open_stream(self, action: OpenStream) -> None:
        try:
            reply = await self.client.request(
                action.addr, action.message.to_wire(), timeout=STREAM_TIMEOUT
            )
            message = decode_stream(reply)
        except (StreamError, MalformedMessage) as error:
            log.debug("push-pull with %s failed: %s", action.addr, error)
            self.counters.stream_failures += 1
            self.feed(StreamFailed(action.addr))
            return
        self.feed(StreamReceived(action.addr, message))

    async def handle_stream(self, request: object, peer: tuple[str, int]) -> object:
        """The TCP server's handler: a peer's push-pull request, answered by the core."""
        try:
            message = decode_stream(request)
        except MalformedMessage:
            self.client.counters.count(DropReason.MALFORMED)
            return None  # the peer's decode fails on it: a quiet refusal, never acted on
        self.counters.streams_received += 1
        stream_id = next(self._stream_ids)
        future: asyncio.Future[PushPull] = self._loop.create_future()
        self._replies[stream_id] = future
        self.feed(StreamReceived(peer, message, stream_id))
        try:
            reply = await asyncio.wait_for(future, STREAM_TIMEOUT)
        finally:
            self._replies.pop(stream_id, None)
        return reply.to_wire()

    async def _receive(self) -> None:
        try:
            async for addr, obj in self.udp:
                try:
                    message = decode_packet(obj)
                except MalformedMessage:
                    self.udp.counters.count(DropReason.MALFORMED)
                    continue
                self.counters.datagrams_received += 1
                self.feed(Received(addr, message))
        except EndpointClosed:
            return

    def _spawn(self, coroutine: object) -> None:
        assert asyncio.iscoroutine(coroutine)
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._receiver.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiver
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
