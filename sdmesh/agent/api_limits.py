"""Limits on the control API before and around authentication (issue 12, item 4).

What a client without a token, or one token holder, could do to the agent's HTTP port, and
what stops it:

- *Descriptors.* 1,100 half-sent connections exhausted the default 1,024 descriptors and
  starved everyone (token holders and the gossip port alike). Now :func:`serve` puts the
  gossip port's :class:`~sdmesh.transport.gate.ConnectionGate` in front of aiohttp: a source
  (an IP address) holds at most ``max_connections_per_source`` connections, of which at most
  ``max_pending_per_source`` still sending their first request head, and the port at most
  a quarter of the descriptor limit. A newcomer takes the place of the oldest connection that
  has not sent a request head yet, and is refused only when every connection is a real one.
  A client on the same address as a flood (loopback included) cannot be told from it before
  it sends its request head: it may lose its place while the flood's connections are still
  arriving, and gets in on a retry once they have (it is never locked out for long; local
  users get their own socket in issue 11). The systemd unit raises ``LimitNOFILE``.
- *Slow or idle clients.* aiohttp arms its keep-alive timer when a connection opens and
  does not re-arm it for partial data, so ``keepalive_timeout`` (``header_timeout`` here) is
  also how long a client may take to send a request's headers; the runner is built with it.
- *Event streams.* One client held every ``/v1/events`` slot; now each source holds at most
  ``max_event_streams_per_client`` (the hub's own total cap stays).
- *The debug DHT route.* 2,203 ``PUT /v1/dht`` in 4 s evicted a pool's record everywhere; the
  route is rate-limited (a token bucket shared by all clients: it is a debugging aid).

The decisions (the gate, :class:`SourceSlots`, :class:`TokenBucket`) are plain code fed
with events and ``now``; the aiohttp parts only call them. Not covered: a TLS handshake is
bounded in time (``header_timeout``) but not counted, since aiohttp sees the connection only
after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from sdmesh.transport.gate import ConnectionGate

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
DHT_PREFIX = "/v1/dht/"


@dataclasses.dataclass(frozen=True)
class ApiLimits:
    max_connections: int = 2048
    """At most; a quarter of the descriptor limit if that is lower (see connection_budget)."""
    max_connections_per_source: int = 64
    max_pending_per_source: int = 16
    """Connections of a source still sending their first request head; past it (or at the
    per-source cap) the source's oldest such connection gives way to the newcomer."""
    header_timeout: float = 10.0
    """Seconds to send a request's headers (and to idle between two requests)."""
    max_event_streams_per_client: int = 4
    dht_writes_per_second: float = 5.0
    dht_write_burst: int = 20


class SourceSlots:
    """Counts what each source holds; ``acquire`` refuses past the per-source or total cap."""

    def __init__(self, per_source: int, total: int | None = None) -> None:
        if per_source < 1 or (total is not None and total < 1):
            raise ValueError("limits must be positive")
        self.per_source = per_source
        self.total = total
        self._held: dict[str, int] = {}
        self._count = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def held(self, source: str) -> int:
        return self._held.get(source, 0)

    def acquire(self, source: str) -> bool:
        full = self.total is not None and self._count >= self.total
        if full or self._held.get(source, 0) >= self.per_source:
            self.refused += 1
            return False
        self._held[source] = self._held.get(source, 0) + 1
        self._count += 1
        return True

    def release(self, source: str) -> None:
        held = self._held.get(source, 0)
        if held <= 0:
            return
        self._count -= 1
        if held == 1:
            del self._held[source]
        else:
            self._held[source] = held - 1


class TokenBucket:
    """``rate`` actions per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> float:
        """0 if the action may go ahead now, else the seconds to wait before asking again."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install_api_limits(app: web.Application, limits: ApiLimits | None = None) -> None:
    """Per-client event streams and the debug DHT route's rate, after authentication (only
    callers the API lets in spend the shared budget)."""
    app.middlewares.append(limits_middleware(limits or ApiLimits()))


def limits_middleware(limits: ApiLimits, clock: Callable[[], float] = time.monotonic) -> Middleware:
    streams = SourceSlots(limits.max_event_streams_per_client)
    dht_writes = TokenBucket(limits.dht_writes_per_second, limits.dht_write_burst)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "PUT" and request.path.startswith(DHT_PREFIX):
            wait = dht_writes.take(clock())
            if wait:
                raise web.HTTPTooManyRequests(
                    text="too many DHT writes; this debugging route takes "
                    f"{limits.dht_writes_per_second:g} per second",
                    headers={"Retry-After": str(math.ceil(wait))},
                )
        if request.path != EVENTS_PATH or request.method != "GET":
            return await handler(request)
        source = request.remote or ""
        if not streams.acquire(source):
            raise web.HTTPTooManyRequests(
                text=f"this client already follows {limits.max_event_streams_per_client} "
                "event streams; close one first",
                headers={"Retry-After": "10"},
            )
        try:
            return await handler(request)
        finally:
            streams.release(source)

    return middleware


_HEAD_END = b"\r\n\r\n"


class _Guard(asyncio.Protocol):
    """Admits a connection through the gate before handing it to aiohttp's handler; it stays
    "pending" (the first to give way to newcomers) until it has sent a complete request head.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        gate: ConnectionGate,
        open_connections: dict[int, asyncio.Transport],
    ) -> None:
        self._inner = inner
        self._gate = gate
        self._open = open_connections
        self._ticket: int | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        admission = self._gate.admit(str(peer[0]) if peer else "")
        if admission.evict is not None:
            evicted = self._open.pop(admission.evict, None)
            if evicted is not None:
                evicted.abort()
        if admission.ticket is None:
            log.debug("API connection from %s refused: too many connections", peer)
            stream.abort()  # no lingering socket for the refused
            return
        self._ticket = admission.ticket
        self._open[admission.ticket] = stream
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ticket is None:
            return
        self._gate.closed(self._ticket)
        self._open.pop(self._ticket, None)
        self._ticket = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ticket is None:
            return
        if self._gate.is_pending(self._ticket):
            seen = self._tail + data
            if _HEAD_END in seen:
                self._gate.authenticated(self._ticket)
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._ticket is not None else None

    def pause_writing(self) -> None:
        if self._ticket is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._ticket is not None:
            self._inner.resume_writing()


def connection_budget(limits: ApiLimits) -> int:
    """The total cap, kept to a quarter of the descriptor limit (the rest is for the gossip
    port, libvirt, disks): outside the systemd unit the default limit is often 1,024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(16, min(limits.max_connections, soft // 4))


async def serve(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ApiLimits | None = None,
) -> tuple[asyncio.Server, ConnectionGate]:
    """Listen like ``web.TCPSite``, with the connection gate in front.

    Build the runner with ``keepalive_timeout=limits.header_timeout``. Close the returned
    server before ``runner.cleanup()``.
    """
    limits = limits or ApiLimits()
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() first")
    gate = ConnectionGate(
        max_connections=connection_budget(limits),
        max_pending_per_source=limits.max_pending_per_source,
        max_per_source=limits.max_connections_per_source,
    )
    factory: Callable[[], Any] = server
    open_connections: dict[int, asyncio.Transport] = {}

    def guarded() -> asyncio.Protocol:
        return _Guard(factory(), gate, open_connections)

    listener = await asyncio.get_running_loop().create_server(
        guarded,
        host,
        port,
        ssl=ssl_context,
        ssl_handshake_timeout=limits.header_timeout if ssl_context else None,
        reuse_address=True,
        backlog=128,
    )
    return listener, gate


__all__ = [
    "ApiLimits",
    "SourceSlots",
    "TokenBucket",
    "install_api_limits",
    "limits_middleware",
    "serve",
]
