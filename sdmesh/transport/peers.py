"""Who listens at which address: the recipient tag a driver puts on frames it sends there.

Filled by the layer that knows (membership introduces every member's name at its address);
the transport never learns it from frames, so what an attacker replays cannot move a name.
An address nobody introduced gets unaddressed frames, which receivers accept only where a
replay is harmless (see ``seal.py``). Bounded: the oldest entries go first.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

from sdmesh.transport.seal import UNADDRESSED, identity_tag

DEFAULT_MAX_PEERS = 65536

_Key = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


class PeerBook:
    """Address -> identity tag, shared by the UDP endpoint and the stream client of one agent
    (membership gossip and its TCP stream listen on the same address)."""

    def __init__(self, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be positive")
        self._max = max_peers
        self._tags: OrderedDict[_Key, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tags)

    def introduce(self, addr: tuple[Any, ...], identity: str | bytes) -> None:
        """``identity`` (a member name) listens at ``addr`` (an ``(ip, port)``) from now on."""
        key = _key(addr)
        if key is None:
            raise ValueError(f"address must be (ip, port), got {addr!r}")
        self._tags[key] = identity_tag(identity)
        self._tags.move_to_end(key)
        while len(self._tags) > self._max:
            self._tags.popitem(last=False)

    def forget(self, addr: tuple[Any, ...]) -> None:
        key = _key(addr)
        if key is not None:
            self._tags.pop(key, None)

    def recipient(self, addr: tuple[Any, ...]) -> bytes:
        """The tag to address a frame to ``addr`` with; ``UNADDRESSED`` if nobody is known."""
        key = _key(addr)
        return self._tags.get(key, UNADDRESSED) if key is not None else UNADDRESSED


def _key(addr: tuple[Any, ...]) -> _Key | None:
    """Normalised ``(ip, port)``: ``::1`` and ``0::1`` are one address."""
    try:
        return (ipaddress.ip_address(addr[0]), int(addr[1]))
    except (ValueError, IndexError, TypeError):
        return None
