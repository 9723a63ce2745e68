"""The asyncio datagram transport the DHT protocol sees: seals on send, opens on receive.

``rpcudp`` talks to ``self.transport.sendto(bytes, addr)`` directly. Wrapping the transport
(rather than the socket) keeps the ``kademlia`` protocol class in charge of its event loop
plumbing while every byte on the wire goes through sdmesh's codec: a frame that fails to
open (wrong key, replay, stale, malformed, sent to another node or port) is counted in the
codec's drop counters and never reaches a handler.

Frames travel on their own channel (``Channel.DHT``), so a gossip datagram sent to the DHT
port is ``misdirected``, and each is addressed to the node id it is meant for: a request to
the contact's id (a bootstrap ping, whose target is not known yet, goes unaddressed), a
response to the id its request named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sdmesh.transport import (
    Channel,
    DropCounters,
    Dropped,
    DropReason,
    FrameCodec,
    Opened,
    PayloadTooLarge,
)
from sdmesh.transport.seal import UNADDRESSED, identity_tag

logger = logging.getLogger(__name__)

Address = tuple[Any, ...]


class SealedDatagramTransport:
    """An ``asyncio.DatagramTransport`` whose ``sendto`` takes objects and seals them."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        codec: FrameCodec,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._clock = clock
        self.send_errors = 0
        """Messages not sent: too large for a datagram, unencodable, or transport closed."""

    @property
    def drops(self) -> DropCounters:
        return self._codec.counters

    @property
    def max_payload(self) -> int:
        return self._codec.max_payload

    def sendto(self, message: object, addr: Address, node_id: bytes | None = None) -> bool:
        """Seal for ``node_id`` (unaddressed if ``None``) and send; False (and counted) if it
        could not be sent."""
        if self._transport.is_closing():
            self.send_errors += 1
            return False
        recipient = identity_tag(node_id) if node_id else UNADDRESSED
        try:
            frame = self._codec.seal(
                message, channel=Channel.DHT, now=self._clock(), recipient=recipient
            )
        except (PayloadTooLarge, TypeError) as exc:
            self.send_errors += 1
            logger.warning("not sending a DHT message to %s: %s", addr, exc)
            return False
        self._transport.sendto(frame, addr)
        return True

    def open(self, data: bytes) -> Opened | None:
        """The frame if it authenticated, was meant for us and decoded, else ``None``.

        Failures are already counted by the codec.
        """
        try:
            return self._codec.open(data, channel=Channel.DHT, now=self._clock())
        except Dropped as dropped:
            logger.debug("dropped DHT datagram: %s", dropped)
            return None
        except Exception:  # a decoding bug must not reach the protocol
            logger.exception("bug: unexpected error opening a DHT datagram")
            self._codec.counters.count(DropReason.MALFORMED)
            return None

    def refuse_unaddressed(self) -> None:
        """Count an unaddressed frame the protocol will not act on."""
        self._codec.counters.count(DropReason.UNADDRESSED)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)
