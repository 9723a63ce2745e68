"""Sealing and opening frames: the sans-IO core every driver (UDP, TCP, DHT) goes through.

Sealed frame, version 3 (54-byte header, then ChaCha20-Poly1305 ciphertext and 16-byte tag)::

    version u8 = 0x03 | key id 4B | session 16B | seq u64 | sent_ms u64
    | channel u8 | sender tag 8B | recipient tag 8B | ciphertext+tag

Version 1 had no channel, sender or recipient in its header: an authentic frame sniffed on
its way to one member opened at any other member, and a gossip datagram sent to the DHT port
reached kademlia. Version 3 names all three, in clear (so a drop can say why) and
authenticated (the whole header is associated data). Mixed versions do not talk: each side
counts the other's frames as ``bad_version`` (see docs/security.md, "The mesh").

Who is named: a *tag*, the first 8 bytes of SHA-256 over a label and the endpoint's identity
(its member name for gossip, its node id for the DHT), all-zero for "not addressed". A name,
not an address: names stay put across NAT, multiple interfaces and re-binds, and per-host
identities (issue 12, item 1) will be bound to names. Tags keep the header a fixed size. A
sender that does not know who listens at an address (a join through a seed, a DHT bootstrap
ping) sends unaddressed; drivers accept unaddressed frames only where replaying one to
another member does no harm (gossip datagrams, membership's push-pull, DHT pings).

Nonce choice: not random. The cluster key is shared by every node and lives for months, and
with random 96-bit nonces the safe budget (about 2**32 frames per key) would be spent by a busy
cluster in days; a repeated nonce leaks plaintexts and lets anyone forge. Instead each sender
session (one per codec, i.e. per driver per process start) picks a random 128-bit session id
and seals under its own subkey ``BLAKE2b(session, key=cluster key)``, with nonce = the session's
frame counter. Nonces are unique by construction; the same counter is the replay sequence.

Associated data binds the whole header (channel and tags included), the cluster name, and an
optional context (a stream response is bound to the request it answers). Opening checks, in
order: size, version, key id (only the indicated key is tried: the id is a hash of the key and
is authenticated, so no other key could open the frame), the replay window (a look only, so
a bulk replay is cheap to refuse), the AEAD tag, then the binding
(channel and recipient: ``misdirected``; these are checked after the tag so the counter only
counts authentic frames, i.e. replays or misroutes, never junk), the clock
(``max_clock_skew``; this closes the replay gap left by a receiver that restarted or evicted a
sender's window), then the replay window, then msgpack. Each failure is counted and raised as
:class:`Dropped`. Junk costs no more than before: everything up to the key id is a few
comparisons and a dictionary lookup.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import struct
from collections import OrderedDict
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sdmesh.transport.codec import Limits, MalformedPacket, decode, encode
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.keyring import Keyring
from sdmesh.transport.replay import DEFAULT_MAX_SENDERS, DEFAULT_WINDOW, ReplayGuard

SEALED_V1 = 0x01
"""Before sender, recipient and channel were bound: refused as ``bad_version``."""
INSECURE_V1 = 0x02
SEALED_V3 = 0x03

IDENTITY_TAG_SIZE = 8
UNADDRESSED = bytes(IDENTITY_TAG_SIZE)
"""The recipient tag of a frame sent to an address whose listener is not known yet."""
HEADER = struct.Struct(">B4s16sQQB8s8s")
TAG_SIZE = 16
OVERHEAD = HEADER.size + TAG_SIZE
SESSION_SIZE = 16
INSECURE_HEADER_SIZE = 2
DEFAULT_MAX_CLOCK_SKEW = 120.0

_SUBKEY_PERSON = b"sdmesh-sess-v3"
_AD_LABEL = b"sdmesh transport v3\x00"
_IDENTITY_LABEL = b"sdmesh identity tag v1\x00"
_MAX_SEQ = (1 << 64) - 1
_CHANNEL_OFFSET = 37  # version, key id, session, seq, sent_ms come first


class Channel(enum.IntEnum):
    """Which path (port and protocol) a frame travels; a frame opens on its own path only."""

    DATAGRAM = 1
    """Membership gossip over UDP (the gossip port)."""
    STREAM_REQUEST = 2
    """A request on the gossip port's TCP stream (push-pull, pool RPCs)."""
    STREAM_RESPONSE = 3
    DHT = 4
    STREAM_HELLO = 5
    """A small first frame that authenticates a connection before a big request."""
    """Kademlia over UDP (the gossip port + 1)."""


def identity_tag(identity: str | bytes) -> bytes:
    """The tag that names an endpoint in frame headers; ``UNADDRESSED`` for no identity."""
    if not identity:
        return UNADDRESSED
    raw = identity.encode("utf-8") if isinstance(identity, str) else bytes(identity)
    tag = hashlib.sha256(_IDENTITY_LABEL + raw).digest()[:IDENTITY_TAG_SIZE]
    return tag if tag != UNADDRESSED else b"\x00" * (IDENTITY_TAG_SIZE - 1) + b"\x01"


class Opened(NamedTuple):
    """A frame that authenticated, was fresh, and decoded.

    ``sender`` is the tag the sender put in the header (authenticated, but any key holder
    can claim any tag until hosts have keys of their own); ``addressed`` is false for a frame
    sent to no one in particular, which drivers accept only where a replay is harmless. A
    named tuple: built for every frame, and a frozen dataclass costs a microsecond more.
    """

    obj: Any
    session: bytes = b""
    seq: int = 0
    sender: bytes = UNADDRESSED
    addressed: bool = True


class FrameCodec(Protocol):
    """What drivers need: turn objects into frames and back, counting every drop."""

    counters: DropCounters
    max_frame: int

    @property
    def max_payload(self) -> int:
        """Largest encoded (msgpack) message that fits in ``max_frame`` once framed."""
        ...

    @property
    def tag(self) -> bytes:
        """This endpoint's identity tag (``UNADDRESSED`` if it has no identity)."""
        ...

    def seal(
        self,
        obj: object,
        *,
        channel: Channel,
        now: float,
        context: bytes = b"",
        recipient: bytes = UNADDRESSED,
    ) -> bytes: ...

    def open(
        self, frame: bytes, *, channel: Channel, now: float, context: bytes = b""
    ) -> Opened: ...

    def binding(self, frame: bytes) -> bytes:
        """The part of a sealed frame a reply is bound to (passed back as ``context``)."""
        ...

    def channel_of(self, frame: bytes) -> int | None:
        """The channel a frame claims (unauthenticated: only to choose how to open it)."""
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
        identity: str | bytes = "",
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
        self._tag = identity_tag(identity)
        cluster_bytes = cluster.encode("utf-8")
        self._ad_prefix = _AD_LABEL + len(cluster_bytes).to_bytes(2, "big") + cluster_bytes

    @property
    def tag(self) -> bytes:
        return self._tag

    def seal(
        self,
        obj: object,
        *,
        channel: Channel,
        now: float,
        context: bytes = b"",
        recipient: bytes = UNADDRESSED,
    ) -> bytes:
        """Encode and seal ``obj`` for ``recipient`` (a tag) on ``channel``.

        ``TypeError``/``PayloadTooLarge``/``ValueError`` (a recipient that is no tag) are the
        caller's bugs.
        """
        if len(recipient) != IDENTITY_TAG_SIZE:
            raise ValueError(f"recipient must be a {IDENTITY_TAG_SIZE}-byte identity tag")
        plaintext = encode(obj, self._limits)
        key = self.keyring.primary
        if self._sealing is None or self._sealing[0] != key:
            self._sealing = (key, _session_cipher(key, self.session))
        seq = self._next_seq
        if seq > _MAX_SEQ:
            raise RuntimeError("session sequence space exhausted; create a new codec")
        self._next_seq = seq + 1
        header = HEADER.pack(
            SEALED_V3,
            self.keyring.primary_id,
            self.session,
            seq,
            _ms(now),
            channel,
            self._tag,
            recipient,
        )
        ad = self._associated_data(context, header)
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

    def channel_of(self, frame: bytes) -> int | None:
        return frame[_CHANNEL_OFFSET] if len(frame) > _CHANNEL_OFFSET else None

    def _open(self, frame: bytes, channel: Channel, now: float, context: bytes) -> Opened:
        if len(frame) > self.max_frame:
            raise Dropped(DropReason.OVERSIZE, f"{len(frame)} bytes, limit {self.max_frame}")
        if not frame:
            raise Dropped(DropReason.MALFORMED, "empty frame")
        if frame[0] != SEALED_V3:
            raise Dropped(DropReason.BAD_VERSION, _describe_version(frame[0]))
        if len(frame) < OVERHEAD:
            raise Dropped(DropReason.MALFORMED, f"{len(frame)} bytes, shorter than a header")
        kid = bytes(frame[1:5])  # before unpacking the rest: most junk stops here
        key = self.keyring.find(kid)
        if key is None:
            raise Dropped(DropReason.UNKNOWN_KEY, f"key id {kid.hex()} not installed")
        _, _, session, seq, sent_ms, sent_on, sender, recipient = HEADER.unpack_from(frame)
        if not self._replay.check(session, seq):
            # Before the tag: a frame already taken from this session (or too old for its
            # window) is refused either way, and a sniffed frame replayed in bulk then costs
            # no more than a rejected key id. Only ``accept`` below changes the window.
            raise Dropped(DropReason.REPLAY, f"seq {seq} already seen or too old")
        cipher = self._opening.get((key, session))
        if cipher is None:
            cipher = _session_cipher(key, session)
        header = bytes(frame[: HEADER.size])
        ad = self._associated_data(context, header)
        try:
            plaintext = cipher.decrypt(_nonce(seq), bytes(frame[HEADER.size :]), ad)
        except InvalidTag:
            raise Dropped(DropReason.AUTH_FAILED, f"key id {kid.hex()}") from None
        self._remember_cipher(key, session, cipher)
        if session == self.session:
            raise Dropped(DropReason.REPLAY, "our own frame reflected back")
        if sent_on != channel:
            raise Dropped(DropReason.MISDIRECTED, f"sent on channel {sent_on}, opened on {channel}")
        addressed = recipient != UNADDRESSED
        if addressed and recipient != self._tag:
            raise Dropped(DropReason.MISDIRECTED, f"addressed to tag {recipient.hex()}")
        skew = self.max_clock_skew
        if skew is not None and abs(_ms(now) - sent_ms) > skew * 1000:
            raise Dropped(DropReason.STALE, f"sent {(_ms(now) - sent_ms) / 1000:.1f}s ago")
        if not self._replay.accept(session, seq):
            raise Dropped(DropReason.REPLAY, f"seq {seq} already seen or too old")
        try:
            obj = decode(plaintext, self._limits)
        except MalformedPacket as exc:
            raise Dropped(DropReason.MALFORMED, str(exc)) from None
        return Opened(obj, session, seq, sender, addressed)

    def _associated_data(self, context: bytes, header: bytes) -> bytes:
        return self._ad_prefix + len(context).to_bytes(4, "big") + context + header

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
    half-talking. Without authentication a recipient binding would prove nothing, so every
    frame counts as addressed (``--insecure`` is for a lab, never a network you do not own).
    """

    tag = UNADDRESSED

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

    def seal(
        self,
        obj: object,
        *,
        channel: Channel,
        now: float,
        context: bytes = b"",
        recipient: bytes = UNADDRESSED,
    ) -> bytes:
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

    def channel_of(self, frame: bytes) -> int | None:
        return frame[1] if len(frame) > 1 else None

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
    """The session's subkey: keyed BLAKE2b (a PRF, RFC 7693) of the session id under the
    cluster key. Version 1 used HKDF-SHA256; BLAKE2b costs a quarter as much, and this runs
    for every authentic sender session and for every forged frame carrying a real key id."""
    subkey = hashlib.blake2b(session, key=key, digest_size=32, person=_SUBKEY_PERSON).digest()
    return ChaCha20Poly1305(subkey)


def _nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


def _ms(now: float) -> int:
    return max(0, int(now * 1000))


def _describe_version(version: int) -> str:
    if version == SEALED_V3:
        return "sealed frame, but this node runs with --insecure"
    if version == SEALED_V1:
        return "sealed frame version 1 (an agent older than the recipient binding): upgrade it"
    if version == INSECURE_V1:
        return "unencrypted frame from a node running with --insecure"
    return f"unknown frame version {version:#04x}"
