"""DHT records: authenticated, versioned values, and the rule that decides which one a node keeps.

A record names its own key, carries a version ``(generation, sequence)``, the id of the node
that wrote it, a write time, and an authenticator. Records are stored and forwarded verbatim
(holders republish them, lookups repair replicas), so the authenticator is part of the record,
not of the transport frame that happened to carry it.

Why HMAC under the cluster key rather than Ed25519 per-node keys: the trust boundary of an
sdmesh cluster is the shared key ring; every key holder can already send any RPC as any node.
Per-node signatures would only add something if member public keys were bound to members by
an authority, and there is none; a key holder could mint its own key pair and sign whatever it
liked. HMAC-SHA256 under ``HKDF(cluster key, info=...)`` keeps every outsider (wrong key,
other cluster) from writing or altering records, costs microseconds instead of a signature
verification per answer, and follows key rotation for free: records are verified with
whichever installed key their ``key_id`` names, and holders re-authenticate under the primary
key when they republish. The format is versioned, so signatures can be added later.

:func:`accept` is the pure decision every store goes through: authenticated, well-formed,
newer ``(generation, sequence)`` wins; a stale write is refused; the same version with
different content is a conflict and is refused too (first write wins on each replica; readers
that see both pick the same one, see :func:`newest`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import struct
from collections.abc import Iterable
from typing import Any, Final

import msgpack  # type: ignore[import-untyped, unused-ignore]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdmesh.dht.ids import ID_SIZE, location_of
from sdmesh.transport import Keyring, TransportSecurity, key_id

RECORD_FORMAT: Final = 1
MAX_KEY_SIZE: Final = 256
MAX_VALUE_SIZE: Final = 32 * 1024
MAX_VERSION: Final = (1 << 63) - 1
KEY_ID_SIZE: Final = 4
AUTH_SIZE: Final = 32
MAX_RECORD_SIZE: Final = MAX_KEY_SIZE + MAX_VALUE_SIZE + 256
"""Largest encoded record: key and value plus the fixed fields and msgpack framing."""

_FIELDS: Final = 9
_SUBKEY_INFO = b"sdmesh dht record v1 authentication key"
_MAC_LABEL = b"sdmesh dht record v1\x00"
_U64 = struct.Struct(">Q")


class RecordError(ValueError):
    """Bytes that are not a well-formed record."""


class Decision(enum.Enum):
    """What a node does with an incoming record."""

    STORE = "store"
    """First record for the key, or a newer version: keep it."""
    DUPLICATE = "duplicate"
    """Same version and content as the one held: keep (refreshes its age)."""
    STALE = "stale"
    """Older than the version held: refused."""
    CONFLICT = "conflict"
    """Same version as the one held but different content: refused."""
    UNAUTHENTICATED = "unauthenticated"
    """Authenticator missing, wrong, or under a key this node does not have: refused."""
    INVALID = "invalid"
    """Malformed: absurd sizes or versions, or stored under a location not its key's."""
    NO_ROOM = "no_room"
    """Storage full of records this node is more responsible for (see ``RecordStore``)."""

    @property
    def accepted(self) -> bool:
        return self is Decision.STORE or self is Decision.DUPLICATE


@dataclasses.dataclass(frozen=True, slots=True)
class DhtRecord:
    """One version of one key's value, as written by ``writer`` at ``timestamp_ms``."""

    key: bytes
    value: bytes
    generation: int
    sequence: int
    writer: bytes
    timestamp_ms: int
    key_id: bytes = b""
    authenticator: bytes = b""

    @property
    def version(self) -> tuple[int, int]:
        return (self.generation, self.sequence)

    @property
    def location(self) -> bytes:
        return location_of(self.key)

    @property
    def timestamp(self) -> float:
        """Write time in seconds since the epoch (informational; versions decide precedence)."""
        return self.timestamp_ms / 1000

    def signed_content(self) -> bytes:
        """The exact bytes the authenticator covers (everything but the key id and tag)."""
        return b"".join(
            (
                _MAC_LABEL,
                _bytes_field(self.key),
                _bytes_field(self.value),
                _U64.pack(self.generation),
                _U64.pack(self.sequence),
                _bytes_field(self.writer),
                _U64.pack(self.timestamp_ms),
            )
        )

    def same_content(self, other: DhtRecord) -> bool:
        return self.signed_content() == other.signed_content()

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(
            [
                RECORD_FORMAT,
                self.key,
                self.value,
                self.generation,
                self.sequence,
                self.writer,
                self.timestamp_ms,
                self.key_id,
                self.authenticator,
            ],
            use_bin_type=True,
        )
        return data

    @classmethod
    def decode(cls, data: bytes) -> DhtRecord:
        """Strictly parse an encoded record; raises :class:`RecordError`."""
        if not isinstance(data, bytes):
            raise RecordError(f"record must be bytes, got {type(data).__name__}")
        if len(data) > MAX_RECORD_SIZE:
            raise RecordError(f"record is {len(data)} bytes, limit {MAX_RECORD_SIZE}")
        try:
            fields = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_bin_len=MAX_VALUE_SIZE,
                max_str_len=0,
                max_array_len=_FIELDS,
                max_map_len=0,
                max_ext_len=0,
                ext_hook=_reject_ext,
            )
        except Exception as exc:  # msgpack raises several unrelated types
            raise RecordError(f"not a record: {type(exc).__name__}: {exc}") from None
        if not isinstance(fields, list) or len(fields) != _FIELDS:
            raise RecordError("record must be a 9-element array")
        fmt, key, value, generation, sequence, writer, timestamp_ms, kid, tag = fields
        if fmt != RECORD_FORMAT or type(fmt) is not int:
            raise RecordError(f"unknown record format {fmt!r}")
        for name, item in (("key", key), ("value", value), ("writer", writer)):
            _require(isinstance(item, bytes), f"{name} must be bytes")
        for name, item in (("key id", kid), ("authenticator", tag)):
            _require(isinstance(item, bytes), f"{name} must be bytes")
        for name, item in (("generation", generation), ("sequence", sequence)):
            _require(type(item) is int, f"{name} must be an integer")
        _require(type(timestamp_ms) is int, "timestamp must be an integer")
        record = cls(key, value, generation, sequence, writer, timestamp_ms, kid, tag)
        problem = malformation(record)
        if problem is not None:
            raise RecordError(problem)
        return record


def malformation(record: DhtRecord) -> str | None:
    """Why ``record`` is not well formed, or ``None``: sizes and ranges a sane writer stays in."""
    if not 0 < len(record.key) <= MAX_KEY_SIZE:
        return f"key must be 1..{MAX_KEY_SIZE} bytes"
    if len(record.value) > MAX_VALUE_SIZE:
        return f"value is {len(record.value)} bytes, limit {MAX_VALUE_SIZE}"
    for name, number in (
        ("generation", record.generation),
        ("sequence", record.sequence),
        ("timestamp", record.timestamp_ms),
    ):
        if not 0 <= number <= MAX_VERSION:
            return f"{name} {number} out of range 0..2**63-1"
    if len(record.writer) != ID_SIZE:
        return f"writer must be a {ID_SIZE}-byte node id"
    if (len(record.key_id), len(record.authenticator)) not in (
        (0, 0),
        (KEY_ID_SIZE, AUTH_SIZE),
    ):
        return "key id and authenticator must both be absent or both be present"
    return None


class RecordAuthority:
    """Authenticates records under the cluster's primary key and verifies them under any key.

    Shares the transport's key ring, so a rotation (``Keyring.use``/``remove``/``replace``)
    applies here at once. With no key ring (``--insecure``) records carry no authenticator and
    only such records are accepted, mirroring the transport's refusal to mix the two modes.
    """

    def __init__(self, keyring: Keyring | None, *, cluster: str = "") -> None:
        self.keyring = keyring
        self._cluster = cluster.encode("utf-8")
        self._subkeys: dict[bytes, bytes] = {}

    @classmethod
    def from_security(cls, security: TransportSecurity) -> RecordAuthority:
        return cls(security.keyring, cluster=security.cluster)

    def authenticate(self, record: DhtRecord) -> DhtRecord:
        """``record`` with a fresh authenticator under the current primary key.

        Raises :class:`RecordError` for a malformed record (a caller's bug).
        """
        problem = malformation(dataclasses.replace(record, key_id=b"", authenticator=b""))
        if problem is not None:
            raise RecordError(problem)
        if self.keyring is None:
            return dataclasses.replace(record, key_id=b"", authenticator=b"")
        key = self.keyring.primary
        return dataclasses.replace(record, key_id=key_id(key), authenticator=self._mac(key, record))

    def verify(self, record: DhtRecord) -> bool:
        if malformation(record) is not None:
            return False
        if self.keyring is None:
            return not record.key_id and not record.authenticator
        key = self.keyring.find(record.key_id) if len(record.key_id) == KEY_ID_SIZE else None
        if key is None:
            return False
        return hmac.compare_digest(self._mac(key, record), record.authenticator)

    def is_current(self, record: DhtRecord) -> bool:
        """Whether ``record`` is authenticated under today's primary key (else re-authenticate)."""
        if self.keyring is None:
            return True
        return record.key_id == self.keyring.primary_id

    def _mac(self, key: bytes, record: DhtRecord) -> bytes:
        subkey = self._subkeys.get(key)
        if subkey is None:
            if len(self._subkeys) > 64:  # rotations only; never grows with traffic
                self._subkeys.clear()
            subkey = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=_SUBKEY_INFO
            ).derive(key)
            self._subkeys[key] = subkey
        message = _bytes_field(self._cluster) + record.signed_content()
        return hmac.new(subkey, message, hashlib.sha256).digest()


def accept(
    existing: DhtRecord | None,
    incoming: DhtRecord,
    authority: RecordAuthority,
    *,
    location: bytes | None = None,
) -> Decision:
    """Whether a node holding ``existing`` should take ``incoming`` (pure; no clock, no I/O).

    ``location`` is where the record was offered; a record offered under any other location
    than its own key's is invalid (it would be served for the wrong key).
    """
    if malformation(incoming) is not None:
        return Decision.INVALID
    if location is not None and location != incoming.location:
        return Decision.INVALID
    if not authority.verify(incoming):
        return Decision.UNAUTHENTICATED
    if existing is None:
        return Decision.STORE
    if existing.key != incoming.key:
        return Decision.INVALID  # a location collision; keep what we have
    if incoming.version > existing.version:
        return Decision.STORE
    if incoming.version < existing.version:
        return Decision.STALE
    if incoming.same_content(existing):
        return Decision.DUPLICATE
    return Decision.CONFLICT


def precedence(record: DhtRecord) -> tuple[int, int, bytes]:
    """Total order readers use: version first, then a content digest to break exact ties.

    Ties only happen when two writers used the same version (each replica kept whichever came
    first); the digest makes every reader pick the same one of them.
    """
    return (record.generation, record.sequence, hashlib.sha256(record.signed_content()).digest())


def newest(records: Iterable[DhtRecord]) -> DhtRecord | None:
    return max(records, key=precedence, default=None)


def _bytes_field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _reject_ext(code: int, data: bytes) -> Any:
    raise RecordError(f"ext type {code} not allowed")
