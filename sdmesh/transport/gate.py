"""Who may hold a connection to the gossip port's TCP stream: limits before authentication.

A sans-IO core (no sockets, no clock): the server asks it whether to admit a connection from
a source, tells it when a connection authenticated (its first frame opened) and when it
closed, and does what the answers say. The rules:

- a source (an IP address) holds at most ``max_pending_per_source`` connections that have not
  authenticated yet; its next one takes the place of its oldest (aborted): one host cannot
  fill the table with idle sockets, and a peer behind the same address (NAT, or the same
  host) still gets in if it authenticates within that many of the flooder's connections;
- at most ``max_connections`` connections in all; when full, a newcomer takes the place of the
  oldest connection still unauthenticated (which the server aborts), so idle sockets from
  many sources delay peers by one eviction, never lock them out; if every connection has
  authenticated, the newcomer is refused;
- authenticated connections are never evicted for anyone: an attacker without the key cannot
  push a peer out;
- optionally (``max_per_source``) a source holds at most that many connections of any kind;
  past it, its own oldest pending one gives way, else the newcomer is refused.

The API (sdmesh/agent/api_limits.py) uses the same gate, a connection counting as
"authenticated" once it has sent a complete request head.

Timeouts (how long an unauthenticated connection may stay) are the driver's: see stream.py.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from typing import Final

DEFAULT_MAX_CONNECTIONS: Final = 512
DEFAULT_MAX_PENDING_PER_SOURCE: Final = 32
"""Above a legitimate burst: a shepherd fans out RPCs to one host several at a time."""


@dataclasses.dataclass(frozen=True)
class Admission:
    """The gate's answer: ``ticket`` (``None``: refused) and a connection to abort first."""

    ticket: int | None
    evict: int | None = None


class ConnectionGate:
    """Connection accounting for one listening socket."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_pending_per_source: int = DEFAULT_MAX_PENDING_PER_SOURCE,
        max_per_source: int | None = None,
    ) -> None:
        if max_connections < 1 or max_pending_per_source < 1:
            raise ValueError("connection limits must be positive")
        if max_per_source is not None and max_per_source < 1:
            raise ValueError("connection limits must be positive")
        self.max_connections = max_connections
        self.max_pending_per_source = max_pending_per_source
        self.max_per_source = max_per_source
        self._by_source: dict[str, int] = {}
        self._tickets = itertools.count(1)
        self._pending: OrderedDict[int, str] = OrderedDict()  # oldest first
        self._pending_by_source: dict[str, int] = {}
        self._authenticated: dict[int, str] = {}
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._pending) + len(self._authenticated)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def admit(self, source: str) -> Admission:
        """Admit a connection from ``source``, maybe in place of an older pending one."""
        evict = None
        own_pending = self._pending_by_source.get(source, 0)
        at_source_cap = (
            self.max_per_source is not None
            and self._by_source.get(source, 0) >= self.max_per_source
        )
        if own_pending >= self.max_pending_per_source or (at_source_cap and own_pending):
            evict = next(ticket for ticket, owner in self._pending.items() if owner == source)
        elif at_source_cap:
            self.refused += 1
            return Admission(None)
        elif len(self) >= self.max_connections:
            if not self._pending:
                self.refused += 1
                return Admission(None)
            evict = next(iter(self._pending))
        if evict is not None:
            self.closed(evict)
            self.evicted += 1
        ticket = next(self._tickets)
        self._pending[ticket] = source
        self._pending_by_source[source] = self._pending_by_source.get(source, 0) + 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return Admission(ticket, evict)

    def held(self, source: str) -> int:
        """Connections ``source`` holds now, pending or not."""
        return self._by_source.get(source, 0)

    def authenticated(self, ticket: int) -> None:
        """The connection's first frame opened: it is a peer's from now on."""
        source = self._drop_pending(ticket)
        if source is not None:
            self._authenticated[ticket] = source

    def is_pending(self, ticket: int) -> bool:
        return ticket in self._pending

    def closed(self, ticket: int) -> None:
        """Forget a connection (idempotent)."""
        source = self._drop_pending(ticket)
        if source is None:
            source = self._authenticated.pop(ticket, None)
        if source is not None:
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]

    def _drop_pending(self, ticket: int) -> str | None:
        source = self._pending.pop(ticket, None)
        if source is not None:
            left = self._pending_by_source[source] - 1
            if left:
                self._pending_by_source[source] = left
            else:
                del self._pending_by_source[source]
        return source
