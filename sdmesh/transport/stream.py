"""TCP driver for what does not fit a datagram (push-pull full state sync).

Each frame is ``u32 length | sealed frame``, sealed exactly like a datagram (same key ring,
same freshness and replay rules) on its own channel, so a datagram cannot be spliced into a
stream or a response passed off as a request. A response is bound to the request it answers
(the request's header is part of its associated data), so an old response cannot be replayed
to a new request. A server that cannot open a request closes the connection without a word:
no error oracle for whoever sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

from sdmesh.transport.codec import PayloadTooLarge
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.seal import Channel, FrameCodec
from sdmesh.transport.security import TransportSecurity

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
DEFAULT_IO_TIMEOUT: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 64
_LENGTH = struct.Struct(">I")

Address = tuple[Any, ...]
Handler = Callable[[Any, Address], Awaitable[Any]]
"""``await handler(request, peer_address) -> response``; raising closes the connection."""


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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prefer :meth:`start`."""
        self._codec = codec
        self._handler = handler
        self._io_timeout = io_timeout
        self._max_connections = max_connections
        self._clock = clock
        self._connections: set[asyncio.Task[None]] = set()
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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> StreamServer:
        """Listen on ``addr`` (port 0 picks a free one)."""
        server = cls(
            security.new_codec(max_frame=max_frame),
            handler,
            io_timeout=io_timeout,
            max_connections=max_connections,
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
        for task in self._connections:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.gather(*self._connections, return_exceptions=True)

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
        if len(self._connections) >= self._max_connections:
            self.counters.count(DropReason.OVERLOAD)
            writer.close()
            return
        self._connections.add(task)
        peer = tuple(writer.get_extra_info("peername") or ())
        try:
            while await self._exchange(reader, writer, peer):
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            logger.debug("stream from %s ended: %r", peer, exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Address
    ) -> bool:
        """Serve one request; False when the connection should end."""
        try:
            async with asyncio.timeout(self._io_timeout):
                frame = await read_frame(reader, self._codec.max_frame)
        except FrameTooLarge as exc:
            self.counters.count(DropReason.OVERSIZE)
            logger.debug("dropped stream from %s: %s", peer, exc)
            return False
        if frame is None:
            return False
        try:
            opened = self._codec.open(frame, channel=Channel.STREAM_REQUEST, now=self._clock())
        except Dropped as dropped:
            logger.debug("dropped stream request from %s: %s", peer, dropped)
            return False
        try:
            response = await self._handler(opened.obj, peer)
            reply = self._codec.seal(
                response,
                channel=Channel.STREAM_RESPONSE,
                now=self._clock(),
                context=self._codec.binding(frame),
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
    ) -> None:
        self._codec = security.new_codec(max_frame=max_frame)
        self._clock = clock

    @property
    def counters(self) -> DropCounters:
        return self._codec.counters

    async def request(self, addr: tuple[str, int], obj: object, *, timeout: float) -> Any:
        """Send ``obj`` to the server at ``addr`` and return its response.

        Raises :class:`StreamTimeout`, :class:`StreamError` for any failure on the way, and
        ``TypeError``/``PayloadTooLarge`` for a request that cannot be encoded.
        """
        frame = self._codec.seal(obj, channel=Channel.STREAM_REQUEST, now=self._clock())
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(addr, frame)
        except TimeoutError as exc:
            raise StreamTimeout(f"no response from {_show(addr)} within {timeout}s") from exc

    async def _exchange(self, addr: tuple[str, int], frame: bytes) -> Any:
        host, port = addr
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise StreamError(f"cannot connect to {_show(addr)}: {exc}") from exc
        try:
            write_frame(writer, frame)
            await writer.drain()
            reply = await read_frame(reader, self._codec.max_frame)
        except FrameTooLarge as exc:
            self.counters.count(DropReason.OVERSIZE)
            raise StreamError(f"response from {_show(addr)} too large: {exc}") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise StreamError(f"connection to {_show(addr)} failed: {exc!r}") from exc
        finally:
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
        return opened.obj


def _show(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
