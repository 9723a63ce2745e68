"""Sealing and opening frames: the sans-IO core every driver (UDP, TCP) goes through.

Sealed frame, version 1 (37-byte header, then ChaCha20-Poly1305 ciphertext and 16-byte tag)::

    version u8 = 0x01 | key id 4B | session 16B | seq u64 | sent_ms u64 | ciphertext+tag

Nonce choice: not random. The cluster key is shared by every node and lives for months, and
with random 96-bit nonces the safe budget (about 2**32 frames per key) would be spent by a busy
cluster in days; a repeated nonce leaks plaintexts and lets anyone forge. Instead each sender
session (one per codec, i.e. per driver per process start) picks a random 128-bit session id
and seals under its own subkey ``HKDF(cluster key, salt=session)``, with nonce = the session's
frame counter. Nonces are unique by construction; the same counter is the replay sequence.

Associated data binds the whole header, the channel (UDP, stream request, stream response, so
a frame cannot be replayed on another path), the cluster name, and an optional context (a
stream response is bound to the request it answers). Opening checks, in order: size, version,
key id (only the indicated key is tried: the id is a hash of the key and is authenticated, so
no other key could open the frame), the AEAD tag, the clock (``max_clock_skew``; this closes
the replay gap left by a receiver that restarted or evicted a sender's window), then the
replay window, then msgpack. Each failure is counted and raised as :class:`Dropped`.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
import struct
from collections import OrderedDict
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdmesh.transport.codec import Limits, MalformedPacket, decode, encode
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.keyring import Keyring
from sdmesh.transport.replay import DEFAULT_MAX_SENDERS, DEFAULT_WINDOW, ReplayGuard

SEALED_V1 = 0x01
INSECURE_V1 = 0x02

HEADER = struct.Struct(">B4s16sQQ")
TAG_SIZE = 16
OVERHEAD = HEADER.size + TAG_SIZE
SESSION_SIZE = 16
INSECURE_HEADER_SIZE = 2
DEFAULT_MAX_CLOCK_SKEW = 120.0

_SUBKEY_INFO = b"sdmesh transport v1 session key"
_AD_LABEL = b"sdmesh transport v1\x00"
_MAX_SEQ = (1 << 64) - 1


class Channel(enum.IntEnum):
    """Which path a frame travels; part of the associated data so paths cannot be mixed."""

    DATAGRAM = 1
    STREAM_REQUEST = 2
    STREAM_RESPONSE = 3


@dataclasses.dataclass(frozen=True)
class Opened:
    """A frame that authenticated, was fresh, and decoded."""

    obj: Any
    session: bytes = b""
    seq: int = 0


class FrameCodec(Protocol):
    """What drivers need: turn objects into frames and back, counting every drop."""

    counters: DropCounters
    max_frame: int

    @property
    def max_payload(self) -> int:
        """Largest encoded (msgpack) message that fits in ``max_frame`` once framed."""
        ...

    def seal(self, obj: object, *, channel: Channel, now: float, context: bytes = b"") -> bytes: ...

    def open(
        self, frame: bytes, *, channel: Channel, now: float, context: bytes = b""
    ) -> Opened: ...

    def binding(self, frame: bytes) -> bytes:
        """The part of a sealed frame a reply is bound to (passed back as ``context``)."""
        ...


class SealedCodec:
    """Frames sealed with the key ring's primary key and opened with any installed key."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        max_frame: int,
        cluster: str = "",
        max_depth: int | None = None,
        max_clock_skew: float | None = DEFAULT_MAX_CLOCK_SKEW,
        replay_window: int = DEFAULT_WINDOW,
        max_senders: int = DEFAULT_MAX_SENDERS,
        counters: DropCounters | None = None,
        session: bytes | None = None,
    ) -> None:
        if max_frame <= OVERHEAD:
            raise ValueError(f"max_frame must exceed the {OVERHEAD}-byte overhead")
        self.keyring = keyring
        self.max_frame = max_frame
        self.max_clock_skew = max_clock_skew
        self.counters = counters if counters is not None else DropCounters()
        self.session = session if session is not None else secrets.token_bytes(SESSION_SIZE)
        if len(self.session) != SESSION_SIZE:
            raise ValueError(f"session id must be {SESSION_SIZE} bytes")
        depth = {} if max_depth is None else {"max_depth": max_depth}
        self._limits = Limits(max_size=max_frame - OVERHEAD, **depth)
        self._replay = ReplayGuard(window=replay_window, max_senders=max_senders)
        self._next_seq = 0
        self._sealing: tuple[bytes, ChaCha20Poly1305] | None = None
        self._opening: OrderedDict[tuple[bytes, bytes], ChaCha20Poly1305] = OrderedDict()
        self._max_cached = max_senders
        cluster_bytes = cluster.encode("utf-8")
        self._ad_prefix = {
            channel: _AD_LABEL
            + bytes([channel])
            + len(cluster_bytes).to_bytes(2, "big")
            + cluster_bytes
            for channel in Channel
        }

    def seal(self, obj: object, *, channel: Channel, now: float, context: bytes = b"") -> bytes:
        """Encode and seal ``obj``; ``TypeError``/``PayloadTooLarge`` are the caller's bugs."""
        plaintext = encode(obj, self._limits)
        key = self.keyring.primary
        if self._sealing is None or self._sealing[0] != key:
            self._sealing = (key, _session_cipher(key, self.session))
        seq = self._next_seq
        if seq > _MAX_SEQ:
            raise RuntimeError("session sequence space exhausted; create a new codec")
        self._next_seq = seq + 1
        header = HEADER.pack(SEALED_V1, self.keyring.primary_id, self.session, seq, _ms(now))
        ad = self._associated_data(channel, context, header)
        return header + self._sealing[1].encrypt(_nonce(seq), plaintext, ad)

    def open(self, frame: bytes, *, channel: Channel, now: float, context: bytes = b"") -> Opened:
        """Authenticate, check freshness and replay, decode; else count and raise ``Dropped``."""
        try:
            return self._open(frame, channel, now, context)
        except Dropped as dropped:
            self.counters.count(dropped.reason)
            raise

    @property
    def max_payload(self) -> int:
        return self._limits.max_size

    def binding(self, frame: bytes) -> bytes:
        return bytes(frame[: HEADER.size])

    def _open(self, frame: bytes, channel: Channel, now: float, context: bytes) -> Opened:
        if len(frame) > self.max_frame:
            raise Dropped(DropReason.OVERSIZE, f"{len(frame)} bytes, limit {self.max_frame}")
        if not frame:
            raise Dropped(DropReason.MALFORMED, "empty frame")
        if frame[0] != SEALED_V1:
            raise Dropped(DropReason.BAD_VERSION, _describe_version(frame[0]))
        if len(frame) < OVERHEAD:
            raise Dropped(DropReason.MALFORMED, f"{len(frame)} bytes, shorter than a header")
        _, kid, session, seq, sent_ms = HEADER.unpack_from(frame)
        key = self.keyring.find(kid)
        if key is None:
            raise Dropped(DropReason.UNKNOWN_KEY, f"key id {kid.hex()} not installed")
        cipher = self._opening.get((key, session))
        if cipher is None:
            cipher = _session_cipher(key, session)
        header = bytes(frame[: HEADER.size])
        ad = self._associated_data(channel, context, header)
        try:
            plaintext = cipher.decrypt(_nonce(seq), bytes(frame[HEADER.size :]), ad)
        except InvalidTag:
            raise Dropped(DropReason.AUTH_FAILED, f"key id {kid.hex()}") from None
        self._remember_cipher(key, session, cipher)
        if session == self.session:
            raise Dropped(DropReason.REPLAY, "our own frame reflected back")
        skew = self.max_clock_skew
        if skew is not None and abs(_ms(now) - sent_ms) > skew * 1000:
            raise Dropped(DropReason.STALE, f"sent {(_ms(now) - sent_ms) / 1000:.1f}s ago")
        if not self._replay.accept(session, seq):
            raise Dropped(DropReason.REPLAY, f"seq {seq} already seen or too old")
        try:
            obj = decode(plaintext, self._limits)
        except MalformedPacket as exc:
            raise Dropped(DropReason.MALFORMED, str(exc)) from None
        return Opened(obj, session, seq)

    def _associated_data(self, channel: Channel, context: bytes, header: bytes) -> bytes:
        return self._ad_prefix[channel] + len(context).to_bytes(4, "big") + context + header

    def _remember_cipher(self, key: bytes, session: bytes, cipher: ChaCha20Poly1305) -> None:
        """Cache per-session subkeys, bounded; only authenticated sessions get an entry."""
        entry = (key, session)
        if entry in self._opening:
            self._opening.move_to_end(entry)
            return
        self._opening[entry] = cipher
        if len(self._opening) > self._max_cached:
            self._opening.popitem(last=False)


class InsecureCodec:
    """``--insecure`` framing: no crypto, but still versioned and strict on decode.

    Frame: ``version u8 = 0x02 | channel u8 | msgpack``. Its version differs from sealed frames,
    so a node with a key and a node without one count each other as ``bad_version`` instead of
    half-talking.
    """

    def __init__(
        self,
        *,
        max_frame: int,
        max_depth: int | None = None,
        counters: DropCounters | None = None,
    ) -> None:
        if max_frame <= INSECURE_HEADER_SIZE:
            raise ValueError("max_frame too small")
        self.max_frame = max_frame
        self.counters = counters if counters is not None else DropCounters()
        depth = {} if max_depth is None else {"max_depth": max_depth}
        self._limits = Limits(max_size=max_frame - INSECURE_HEADER_SIZE, **depth)

    def seal(self, obj: object, *, channel: Channel, now: float, context: bytes = b"") -> bytes:
        return bytes([INSECURE_V1, channel]) + encode(obj, self._limits)

    def open(self, frame: bytes, *, channel: Channel, now: float, context: bytes = b"") -> Opened:
        try:
            return self._open(frame, channel)
        except Dropped as dropped:
            self.counters.count(dropped.reason)
            raise

    @property
    def max_payload(self) -> int:
        return self._limits.max_size

    def binding(self, frame: bytes) -> bytes:
        return b""

    def _open(self, frame: bytes, channel: Channel) -> Opened:
        if len(frame) > self.max_frame:
            raise Dropped(DropReason.OVERSIZE, f"{len(frame)} bytes, limit {self.max_frame}")
        if not frame:
            raise Dropped(DropReason.MALFORMED, "empty frame")
        if frame[0] != INSECURE_V1:
            raise Dropped(DropReason.BAD_VERSION, _describe_version(frame[0]))
        if len(frame) < INSECURE_HEADER_SIZE or frame[1] != channel:
            raise Dropped(DropReason.MALFORMED, "missing or wrong channel byte")
        try:
            return Opened(decode(bytes(frame[INSECURE_HEADER_SIZE:]), self._limits))
        except MalformedPacket as exc:
            raise Dropped(DropReason.MALFORMED, str(exc)) from None


def _session_cipher(key: bytes, session: bytes) -> ChaCha20Poly1305:
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=session, info=_SUBKEY_INFO).derive(key)
    return ChaCha20Poly1305(subkey)


def _nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


def _ms(now: float) -> int:
    return max(0, int(now * 1000))


def _describe_version(version: int) -> str:
    if version == SEALED_V1:
        return "sealed frame, but this node runs with --insecure"
    if version == INSECURE_V1:
        return "unencrypted frame from a node running with --insecure"
    return f"unknown frame version {version:#04x}"
