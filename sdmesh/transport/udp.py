"""UDP driver: sealed msgpack datagrams over an ``asyncio-dgram`` socket.

A reader task opens every datagram as soon as it arrives and queues only the ones that
authenticated and decoded; the rest are counted and forgotten. Keeping the raw socket queue
drained this way leaves backpressure to the kernel's socket buffer, and the queue of accepted
messages is bounded (overflow is counted as ``overload``), so a flood cannot grow memory.

Frames are addressed to whoever the :class:`PeerBook` says listens at the destination, and
frames addressed to another member are dropped (``misdirected``). Unaddressed frames (joins
through a seed, a relayed ping to a member not known yet) are accepted: gossip is broadcast
to every member by design, so replaying one to another member tells it nothing it would not
hear anyway, and the clock window bounds how old it can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Final, cast

import asyncio_dgram

from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.peers import PeerBook
from sdmesh.transport.seal import Channel, FrameCodec
from sdmesh.transport.security import TransportSecurity

logger = logging.getLogger(__name__)

# What fits an Ethernet MTU with IP/UDP headers to spare (memberlist uses the same figure).
DEFAULT_MAX_DATAGRAM: Final = 1400
MAX_UDP_PAYLOAD: Final = 65507
DEFAULT_QUEUE_SIZE: Final = 1024

Address = tuple[Any, ...]
"""``(host, port)`` for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6; hosts are IPs."""


class EndpointClosed(Exception):
    """The endpoint was closed; no more datagrams will be sent or received."""


_CLOSED: Final = object()


class UdpEndpoint:
    """A bound UDP socket that sends and receives objects, sealed by its own codec."""

    def __init__(
        self,
        stream: asyncio_dgram.DatagramServer,
        codec: FrameCodec,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        peers: PeerBook | None = None,
    ) -> None:
        """Prefer :meth:`bind`; this wires an already bound socket."""
        self._stream = stream
        self._codec = codec
        self.peers = peers if peers is not None else PeerBook()
        """Who listens where: the recipient of what ``send`` seals."""
        self._clock = clock
        self._inbox: asyncio.Queue[tuple[Address, Any] | object] = asyncio.Queue(queue_size)
        self._closed = False
        self.socket_errors = 0
        """ICMP errors and failed sends the kernel reported; UDP gives no delivery promise."""
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def bind(
        cls,
        addr: tuple[str, int],
        security: TransportSecurity,
        *,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        identity: str = "",
        peers: PeerBook | None = None,
    ) -> UdpEndpoint:
        """Bind ``addr`` (port 0 picks a free one) and start receiving.

        ``identity`` is this member's name: frames addressed to another name are dropped.
        """
        if not 0 < max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram must be in 1..{MAX_UDP_PAYLOAD}")
        _require_ip(addr)
        codec = security.new_codec(max_frame=max_datagram, identity=identity)
        stream = await asyncio_dgram.bind(addr)
        return cls(stream, codec, queue_size=queue_size, clock=clock, peers=peers)

    @property
    def local_address(self) -> Address:
        return tuple(self._stream.sockname)

    @property
    def counters(self) -> DropCounters:
        return self._codec.counters

    @property
    def max_datagram(self) -> int:
        """Largest datagram on the wire, sealing included."""
        return self._codec.max_frame

    @property
    def max_payload(self) -> int:
        """Largest msgpack encoding ``send`` accepts: the budget for the layers above."""
        return self._codec.max_payload

    async def send(self, addr: Address, obj: object) -> None:
        """Seal and send ``obj`` to ``addr`` (an IP address, never a name: no DNS here).

        Fire and forget, like UDP. Raises ``PayloadTooLarge`` if the sealed datagram would
        exceed ``max_datagram`` (use the stream path), ``TypeError`` for unencodable values,
        :class:`EndpointClosed` after ``close``.
        """
        if self._closed:
            raise EndpointClosed()
        _require_ip(addr)
        frame = self._codec.seal(
            obj, channel=Channel.DATAGRAM, now=self._clock(), recipient=self.peers.recipient(addr)
        )
        self._discard_reported_errors()
        try:
            await self._stream.send(frame, addr)
        except asyncio_dgram.TransportClosed as exc:
            raise EndpointClosed() from exc

    async def recv(self) -> tuple[Address, Any]:
        """The next datagram that authenticated and decoded, as ``(sender address, object)``."""
        if self._closed and self._inbox.empty():
            raise EndpointClosed()
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # wake any other receiver too
            raise EndpointClosed()
        return cast(tuple[Address, Any], item)

    def __aiter__(self) -> AsyncIterator[tuple[Address, Any]]:
        return self

    async def __anext__(self) -> tuple[Address, Any]:
        try:
            return await self.recv()
        except EndpointClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving and release the socket; pending receivers get EndpointClosed."""
        self._reader.cancel()
        self._shut_down()

    def _shut_down(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        while self._inbox.full():  # make room for the wake-up; closing loses messages anyway
            self._inbox.get_nowait()
        self._inbox.put_nowait(_CLOSED)

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    async def _read_loop(self) -> None:
        while True:
            try:
                data, addr = await self._stream.recv()
            except asyncio_dgram.TransportClosed:
                break
            except OSError as exc:  # an earlier send's ICMP error, surfaced on this call
                self.socket_errors += 1
                logger.debug("socket error: %s", exc)
                continue
            except Exception:  # keep receiving whatever the socket layer reports
                self.socket_errors += 1
                logger.exception("unexpected error from the datagram socket")
                continue
            self._accept(data, cast(Address, addr))
        self._shut_down()

    def _accept(self, data: bytes, addr: Address) -> None:
        try:
            opened = self._codec.open(data, channel=Channel.DATAGRAM, now=self._clock())
        except Dropped as dropped:
            logger.debug("dropped datagram from %s: %s", addr, dropped)
            return
        except Exception:  # a decoding bug must not kill the receive loop
            logger.exception("bug: unexpected error opening a datagram from %s", addr)
            self.counters.count(DropReason.MALFORMED)
            return
        try:
            self._inbox.put_nowait((addr, opened.obj))
        except asyncio.QueueFull:
            self.counters.count(DropReason.OVERLOAD)

    def _discard_reported_errors(self) -> None:
        """asyncio-dgram raises a stale socket error on the next call; count it instead."""
        while True:
            try:
                self._stream.exception  # noqa: B018 - the property raises queued errors
            except OSError as exc:
                self.socket_errors += 1
                logger.debug("socket error: %s", exc)
                continue
            return


def _require_ip(addr: Address) -> None:
    """Reject host names: resolving them inside ``sendto`` would block the event loop."""
    try:
        ipaddress.ip_address(addr[0])
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"address must be (ip, port), got {addr!r}") from exc
