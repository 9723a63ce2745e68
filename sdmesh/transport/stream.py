"""TCP driver for what does not fit a datagram (push-pull full state sync, pool RPCs).

Each frame is ``u32 length | sealed frame``, sealed exactly like a datagram (same key ring,
same freshness and replay rules) on its own channel, so a datagram cannot be spliced into a
stream or a response passed off as a request. A response is bound to the request it answers
(the request's header is part of its associated data), so an old response cannot be replayed
to a new request, and it must come from the member the request was addressed to. A server that
cannot open a request closes the connection without a word: no error oracle for whoever sent
it.

Limits before authentication: until a connection's first frame has opened, it may announce
at most ``preauth_max_frame`` bytes and must deliver them within ``handshake_timeout``; a
client with a bigger request first sends a small sealed hello (its own channel). So nobody
without the key makes the server buffer more than 64 KiB per connection or hold a socket
for more than a few seconds, and :class:`~sdmesh.transport.gate.ConnectionGate` caps how many
such connections a source may hold and lets newcomers replace the oldest of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

from sdmesh.transport.codec import PayloadTooLarge
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.gate import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PENDING_PER_SOURCE,
    ConnectionGate,
)
from sdmesh.transport.peers import PeerBook
from sdmesh.transport.seal import UNADDRESSED, Channel, FrameCodec
from sdmesh.transport.security import TransportSecurity

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
DEFAULT_IO_TIMEOUT: Final = 30.0
PREAUTH_MAX_FRAME: Final = 64 * 1024
"""Largest frame read from a connection that has not authenticated yet."""
DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds a new connection has to deliver its first frame in full."""
_LENGTH = struct.Struct(">I")
_HELLO: Final = {"hello": 1}

Address = tuple[Any, ...]
Handler = Callable[[Any, Address], Awaitable[Any]]
"""``await handler(request, peer_address) -> response``; raising closes the connection."""
UnaddressedPolicy = Callable[[Any], bool]
"""Whether an unaddressed request (sent to no member in particular) may be served."""


class StreamError(Exception):
    """A request got no acceptable response (connection failed, closed, or reply rejected)."""


class StreamTimeout(StreamError, TimeoutError):
    """No response within the request's timeout."""


class FrameTooLarge(Exception):
    """The peer announced a frame longer than ``max_frame``; the connection is abandoned."""


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes | None:
    """One length-prefixed frame, or ``None`` on a clean end of stream between frames.

    Raises :class:`FrameTooLarge` before reading the body, so a liar cannot make us buffer it;
    ``asyncio.IncompleteReadError`` if the stream ends inside a frame.
    """
    try:
        prefix = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = _LENGTH.unpack(prefix)
    if length > max_frame:
        raise FrameTooLarge(f"{length} bytes announced, limit {max_frame}")
    return await reader.readexactly(length)


def write_frame(writer: asyncio.StreamWriter, frame: bytes) -> None:
    writer.write(_LENGTH.pack(len(frame)))
    writer.write(frame)


class StreamServer:
    """Serves sealed request/response exchanges; several requests may share a connection."""

    def __init__(
        self,
        codec: FrameCodec,
        handler: Handler,
        *,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_pending_per_source: int = DEFAULT_MAX_PENDING_PER_SOURCE,
        preauth_max_frame: int = PREAUTH_MAX_FRAME,
        accepts_unaddressed: UnaddressedPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prefer :meth:`start`."""
        self._codec = codec
        self._handler = handler
        self._io_timeout = io_timeout
        self._handshake_timeout = handshake_timeout
        self._preauth_max_frame = min(preauth_max_frame, codec.max_frame)
        self._accepts_unaddressed = accepts_unaddressed
        self._clock = clock
        self.gate = ConnectionGate(
            max_connections=max_connections, max_pending_per_source=max_pending_per_source
        )
        self._connections: dict[int, asyncio.Task[None]] = {}
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(
        cls,
        addr: tuple[str, int],
        security: TransportSecurity,
        handler: Handler,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_pending_per_source: int = DEFAULT_MAX_PENDING_PER_SOURCE,
        identity: str = "",
        accepts_unaddressed: UnaddressedPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> StreamServer:
        """Listen on ``addr`` (port 0 picks a free one).

        ``identity`` is this member's name (requests addressed to another are dropped);
        ``accepts_unaddressed`` decides which unaddressed requests are served (default: all;
        the agent serves only membership's push-pull, never a pool RPC).
        """
        server = cls(
            security.new_codec(max_frame=max_frame, identity=identity),
            handler,
            io_timeout=io_timeout,
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            max_pending_per_source=max_pending_per_source,
            accepts_unaddressed=accepts_unaddressed,
            clock=clock,
        )
        host, port = addr
        server._server = await asyncio.start_server(server._serve, host, port)
        return server

    @property
    def local_address(self) -> Address:
        assert self._server is not None, "not started"
        return tuple(self._server.sockets[0].getsockname())

    @property
    def counters(self) -> DropCounters:
        return self._codec.counters

    def close(self) -> None:
        """Stop listening and abort every open connection."""
        if self._server is not None:
            self._server.close()
        for task in self._connections.values():
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.gather(*self._connections.values(), return_exceptions=True)

    async def __aenter__(self) -> StreamServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = tuple(writer.get_extra_info("peername") or ())
        admission = self.gate.admit(str(peer[0]) if peer else "")
        ticket = admission.ticket
        if admission.evict is not None:
            evicted = self._connections.pop(admission.evict, None)
            if evicted is not None:
                evicted.cancel()
        if ticket is None:
            self.counters.count(DropReason.OVERLOAD)
            writer.transport.abort()
            return
        self._connections[ticket] = task
        try:
            while await self._exchange(reader, writer, peer, ticket):
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            logger.debug("stream from %s ended: %r", peer, exc)
        except asyncio.CancelledError:
            writer.transport.abort()  # evicted or closing: no lingering close handshake
            raise
        finally:
            self.gate.closed(ticket)
            self._connections.pop(ticket, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Address,
        ticket: int,
    ) -> bool:
        """Serve one request (or take the hello); False when the connection should end."""
        pending = self.gate.is_pending(ticket)
        limit = self._preauth_max_frame if pending else self._codec.max_frame
        try:
            async with asyncio.timeout(self._handshake_timeout if pending else self._io_timeout):
                frame = await read_frame(reader, limit)
        except FrameTooLarge as exc:
            self.counters.count(DropReason.OVERSIZE)
            logger.debug("dropped stream from %s: %s", peer, exc)
            return False
        if frame is None:
            return False
        hello = pending and self._codec.channel_of(frame) == Channel.STREAM_HELLO
        channel = Channel.STREAM_HELLO if hello else Channel.STREAM_REQUEST
        try:
            opened = self._codec.open(frame, channel=channel, now=self._clock())
        except Dropped as dropped:
            logger.debug("dropped stream frame from %s: %s", peer, dropped)
            return False
        self.gate.authenticated(ticket)
        if hello:
            return True
        policy = self._accepts_unaddressed
        if not opened.addressed and policy is not None and not policy(opened.obj):
            self.counters.count(DropReason.UNADDRESSED)
            logger.debug("dropped an unaddressed request from %s", peer)
            return False
        try:
            response = await self._handler(opened.obj, peer)
            reply = self._codec.seal(
                response,
                channel=Channel.STREAM_RESPONSE,
                now=self._clock(),
                context=self._codec.binding(frame),
                recipient=opened.sender,
            )
        except (TypeError, PayloadTooLarge):
            logger.exception("stream handler returned a response that cannot be sent")
            return False
        except Exception:
            logger.exception("stream handler failed on a request from %s", peer)
            return False
        write_frame(writer, reply)
        async with asyncio.timeout(self._io_timeout):
            await writer.drain()
        return True


class StreamClient:
    """Sends requests over fresh connections; one client (one sender session) per agent."""

    def __init__(
        self,
        security: TransportSecurity,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        clock: Callable[[], float] = time.time,
        identity: str = "",
        peers: PeerBook | None = None,
    ) -> None:
        """``identity`` is this member's name; ``peers`` says who listens where (shared with
        the UDP endpoint: gossip and its stream share an address)."""
        self._codec = security.new_codec(max_frame=max_frame, identity=identity)
        self._clock = clock
        self.peers = peers if peers is not None else PeerBook()
        # --insecure frames name no sender: there is nothing to check a response against.
        self._checks_sender = not security.is_insecure

    @property
    def counters(self) -> DropCounters:
        return self._codec.counters

    async def request(self, addr: tuple[str, int], obj: object, *, timeout: float) -> Any:
        """Send ``obj`` to the server at ``addr`` and return its response.

        Raises :class:`StreamTimeout`, :class:`StreamError` for any failure on the way, and
        ``TypeError``/``PayloadTooLarge`` for a request that cannot be encoded.
        """
        recipient = self.peers.recipient(addr)
        now = self._clock()
        frame = self._codec.seal(obj, channel=Channel.STREAM_REQUEST, now=now, recipient=recipient)
        hello = b""
        if len(frame) > PREAUTH_MAX_FRAME:  # the server reads no more before it trusts us
            hello = self._codec.seal(
                _HELLO, channel=Channel.STREAM_HELLO, now=now, recipient=recipient
            )
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(addr, hello, frame, recipient)
        except TimeoutError as exc:
            raise StreamTimeout(f"no response from {_show(addr)} within {timeout}s") from exc

    async def _exchange(
        self, addr: tuple[str, int], hello: bytes, frame: bytes, recipient: bytes
    ) -> Any:
        host, port = addr
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise StreamError(f"cannot connect to {_show(addr)}: {exc}") from exc
        answered = False
        try:
            if hello:
                write_frame(writer, hello)
            write_frame(writer, frame)
            await writer.drain()
            reply = await read_frame(reader, self._codec.max_frame)
            answered = True
        except FrameTooLarge as exc:
            self.counters.count(DropReason.OVERSIZE)
            raise StreamError(f"response from {_show(addr)} too large: {exc}") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise StreamError(f"connection to {_show(addr)} failed: {exc!r}") from exc
        finally:
            if not answered:
                _discard_unsent(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if reply is None:
            raise StreamError(f"{_show(addr)} closed the connection without a response")
        try:
            opened = self._codec.open(
                reply,
                channel=Channel.STREAM_RESPONSE,
                now=self._clock(),
                context=self._codec.binding(frame),
            )
        except Dropped as dropped:
            raise StreamError(f"response from {_show(addr)} rejected: {dropped}") from dropped
        if self._checks_sender and recipient != UNADDRESSED and opened.sender != recipient:
            self.counters.count(DropReason.MISDIRECTED)
            raise StreamError(f"response from {_show(addr)} rejected: not the member addressed")
        return opened.obj


def _show(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _discard_unsent(writer: asyncio.StreamWriter) -> None:
    """Make closing a request that got no answer (a timeout, a cancel, an error) reset the
    connection and drop what the kernel has not delivered yet: otherwise it keeps sending
    it after we gave up, and a peer cut off for a while could act on a request long after
    its sender moved on (an order for a VM rebuilt elsewhere since: docs/ha.md)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # close() would first flush asyncio's own buffer
