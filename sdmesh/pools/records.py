"""What pools put on the wire and in the DHT: specs, records, orders, reports.

A *spec* is the immutable part of a pool (its resolved tree as canonical text, the digest of
that tree, the prototype each component extended); it is stored once under its digest. A
*record* is the mutable part (generation, shepherd, placement, state), stored under the pool's
key and versioned by generation. Orders go from a shepherd to a host, reports come back.
Everything decodes through :func:`_require`, so a malformed or hostile message raises
:class:`RecordFormatError` and is never half-applied.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from sdmesh.finite import finite_number
from sdmesh.pools.generations import generation_refusal, is_generation

SPEC_VERSION: Final = 1
POOL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # used with fullmatch ('$' allows "\n")
#: A digest names a file (specs/<digest>.spec): letters, digits, '_' and '-' only (sha256
#: hex in practice; PoolSpec.decode checks the real one).
DIGEST = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Member names and component paths from the mesh: printable, bounded, no '/' in names and no
#: '.' or '..' segment (they end up in file names, log lines and libvirt metadata).
MAX_MEMBER_NAME: Final = 255
MAX_COMPONENT_PATH: Final = 1024
#: The prototype a component extended (``kinds``): a name, shown by status and the dashboard.
MAX_KIND_CHARS: Final = 128
_SEGMENTS = re.compile(r"[:/]")
MAX_SPEC_BYTES: Final = 16 * 1024 * 1024
#: Pool states, as ``sdmesh status`` shows them.
POOL_STATES: Final = ("deploying", "running", "terminating", "terminated", "failed")
#: Leaf operations a shepherd orders.
OPERATIONS: Final = ("deploy", "start", "terminate")
#: A signature envelope is about 250 bytes (sdmesh.trust.signatures.MAX_ENVELOPE_BYTES).
MAX_SIGNATURE_BYTES: Final = 1024
#: A writer's proof: its Ed25519 signature (64 bytes) and its host certificate (at most 512,
#: sdmesh.trust.identity.MAX_CERT_BYTES); sdmesh.pools.record_seal makes and checks it.
MAX_PROOF_BYTES: Final = 64 + 512
#: Chunks a blob is cut into for the DHT (its values are limited to 32 KiB).
CHUNK_BYTES: Final = 30 * 1024


class RecordFormatError(ValueError):
    """Bytes that are not a well-formed spec, record, order or report."""


def check_pool_id(pool: str) -> str:
    """``pool`` if it is a pool id; ValueError naming the rule otherwise. fullmatch: with
    ``match``, ``$`` also matches before a final newline, and "web\\n" got through."""
    if not isinstance(pool, str) or not POOL_ID.fullmatch(pool):
        raise ValueError(
            f"bad pool name {pool!r}: use 1-63 characters a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return pool


def checked_ids(
    *,
    pool: object = None,
    digest: object = None,
    names: tuple[object, ...] = (),
    paths: tuple[object, ...] = (),
) -> None:
    """Validate ids that arrived from the mesh (orders, records, rumors, RPCs) again:
    a peer's bug or a compromised member must not turn one into a file name or a log
    line. RecordFormatError (a ValueError) names the field; None means "not given"."""
    if pool is not None:
        try:
            check_pool_id(pool)  # type: ignore[arg-type]
        except ValueError:
            raise RecordFormatError("malformed pool id") from None
    if digest is not None and not (isinstance(digest, str) and DIGEST.fullmatch(digest)):
        raise RecordFormatError("malformed descriptor digest")
    for name in names:
        if not is_member_name(name):
            raise RecordFormatError("malformed member name")
    for path in paths:
        if not is_component_path(path):
            raise RecordFormatError("malformed component path")


def _printable(text: str) -> bool:
    """No C0 or C1 control, no format character (``str.isprintable`` refuses categories Cc
    and Cf, so the bidi overrides and isolates U+202A-202E and U+2066-2069, which make a log
    line or a terminal read as something else), no line or paragraph separator."""
    return text.isprintable()


def is_member_name(name: object) -> bool:
    """1-255 printable characters, no '/', not '.' or '..'."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_MEMBER_NAME
        and "/" not in name
        and name not in (".", "..")
        and _printable(name)
    )


def is_component_path(path: object) -> bool:
    """1-1024 printable characters, no '.' or '..' between ':' or '/' separators."""
    return (
        isinstance(path, str)
        and 0 < len(path) <= MAX_COMPONENT_PATH
        and _printable(path)
        and not any(part in (".", "..") for part in _SEGMENTS.split(path))
    )


def is_kind(kind: object) -> bool:
    """A component's prototype name: at most 128 printable characters (empty: none)."""
    return isinstance(kind, str) and len(kind) <= MAX_KIND_CHARS and _printable(kind)


def checked_rumor_ids(key: str, body: dict[str, Any]) -> None:
    """A pool or tombstone rumor's ids: the key is a pool id; the digest and shepherd, when
    the body has them, are a digest and a member name. RecordFormatError otherwise."""
    digest, shepherd = body.get("digest"), body.get("shepherd")
    checked_ids(
        pool=key,
        digest=digest if digest not in (None, "") else None,
        names=(shepherd,) if shepherd not in (None, "") else (),
    )


def _require(obj: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
        raise RecordFormatError(f"missing or malformed field {key!r}")
    value = obj[key]
    if kind is int and isinstance(value, bool):
        raise RecordFormatError(f"malformed field {key!r}")
    return value


def _generation(obj: Any, key: str) -> int:
    """A generation field, bounded (sdmesh.pools.generations)."""
    value = _require(obj, key, int)
    problem = generation_refusal(value)
    if problem is not None:
        raise RecordFormatError(f"field {key!r}: {problem}")
    return int(value)


def _str_map(obj: Any, key: str) -> dict[str, str]:
    value = _require(obj, key, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RecordFormatError(f"malformed field {key!r}")
    return dict(value)


def _pack(obj: object) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def _unpack(data: bytes, limit: int = MAX_SPEC_BYTES) -> Any:
    if len(data) > limit:
        raise RecordFormatError(f"larger than {limit} bytes")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types
        raise RecordFormatError(f"not msgpack: {error}") from None


@dataclass(frozen=True)
class PoolSpec:
    """The immutable description of a pool, as every agent re-resolves it."""

    pool: str
    text: str  # the resolved sfConfig in canonical SmartFrog syntax
    digest: str  # sha256 of ``text`` as the language computes it
    kinds: dict[str, str] = field(default_factory=dict)  # path -> prototype extended
    submitted_by: str = ""

    def encode(self) -> bytes:
        body = {
            "v": SPEC_VERSION,
            "pool": self.pool,
            "text": self.text,
            "digest": self.digest,
            "kinds": self.kinds,
            "by": self.submitted_by,
        }
        return zlib.compress(_pack(body), 6)

    @classmethod
    def decode(cls, data: bytes) -> PoolSpec:
        try:
            raw = zlib.decompressobj().decompress(data, MAX_SPEC_BYTES)
        except zlib.error as error:
            raise RecordFormatError(f"spec is not zlib data: {error}") from None
        obj = _unpack(raw)
        if _require(obj, "v", int) != SPEC_VERSION:
            raise RecordFormatError(f"spec version {obj['v']} is not {SPEC_VERSION}")
        spec = cls(
            pool=_require(obj, "pool", str),
            text=_require(obj, "text", str),
            digest=_require(obj, "digest", str),
            kinds=_str_map(obj, "kinds"),
            submitted_by=_require(obj, "by", str),
        )
        if hashlib.sha256(spec.text.encode()).hexdigest() != spec.digest:
            raise RecordFormatError("spec text does not match its digest")
        checked_ids(pool=spec.pool, digest=spec.digest, paths=tuple(spec.kinds))
        if not all(is_kind(kind) for kind in spec.kinds.values()):
            raise RecordFormatError("malformed component kind")
        return spec


@dataclass(frozen=True)
class PoolRecord:
    """The mutable state of a pool, kept by its shepherd in the DHT."""

    pool: str
    digest: str
    generation: int
    shepherd: str
    state: str = "deploying"
    placement: dict[str, str] = field(default_factory=dict)  # unit path -> host
    reason: str = ""
    #: Hosts that left gracefully -> when (wall clock, seconds) their grace ends, and what
    #: each still runs of the pool (leaf path -> ``deployed`` or ``running``): any later
    #: shepherd honours the grace instead of rebuilding their VMs elsewhere.
    away: dict[str, float] = field(default_factory=dict)
    vouched: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The operator's signature envelope (sdmesh.trust.signatures), as submitted; empty for
    #: an unsigned pool (and for records from before signatures), which no host runs.
    signature: bytes = b""
    #: The member that wrote this copy, and its proof (host identities on: its signature over
    #: sdmesh.pools.record_seal.record_bytes and its certificate); empty without identities.
    writer: str = ""
    proof: bytes = b""

    def encode(self) -> bytes:
        body: dict[str, object] = {
            "pool": self.pool,
            "digest": self.digest,
            "gen": self.generation,
            "shepherd": self.shepherd,
            "state": self.state,
            "placement": self.placement,
            "reason": self.reason,
        }
        if self.away:
            body["away"] = self.away
            body["vouched"] = self.vouched
        if self.signature:
            body["sig"] = self.signature
        if self.writer:
            body["writer"] = self.writer
        if self.proof:
            body["proof"] = self.proof
        return zlib.compress(_pack(body), 6)

    @classmethod
    def decode(cls, data: bytes) -> PoolRecord:
        try:
            raw = zlib.decompressobj().decompress(data, MAX_SPEC_BYTES)
        except zlib.error as error:
            raise RecordFormatError(f"record is not zlib data: {error}") from None
        obj = _unpack(raw)
        state = _require(obj, "state", str)
        if state not in POOL_STATES:
            raise RecordFormatError(f"unknown pool state {state!r}")
        record = cls(
            pool=_require(obj, "pool", str),
            digest=_require(obj, "digest", str),
            generation=_generation(obj, "gen"),
            shepherd=_require(obj, "shepherd", str),
            state=state,
            placement=_str_map(obj, "placement"),
            reason=_require(obj, "reason", str),
            away=_away(obj),
            vouched=_vouched(obj),
            signature=_signature(obj),
            writer=_writer(obj),
            proof=_proof(obj),
        )
        checked_ids(
            pool=record.pool,
            digest=record.digest,
            names=(
                record.shepherd,
                *record.placement.values(),
                *record.away,
                *record.vouched,
                *((record.writer,) if record.writer else ()),
            ),
            paths=(*record.placement, *(p for leaves in record.vouched.values() for p in leaves)),
        )
        return record


def _signature(obj: dict[str, Any]) -> bytes:
    """Optional (unsigned pools and records from before signatures have none)."""
    value = obj.get("sig", b"")
    if not isinstance(value, bytes) or len(value) > MAX_SIGNATURE_BYTES:
        raise RecordFormatError("malformed field 'sig'")
    return value


def _writer(obj: dict[str, Any]) -> str:
    """Optional (records written without host identities, or before them, have none)."""
    value = obj.get("writer", "")
    if not isinstance(value, str):
        raise RecordFormatError("malformed field 'writer'")
    return value


def _proof(obj: dict[str, Any]) -> bytes:
    value = obj.get("proof", b"")
    if not isinstance(value, bytes) or len(value) > MAX_PROOF_BYTES:
        raise RecordFormatError("malformed field 'proof'")
    return value


def _away(obj: dict[str, Any]) -> dict[str, float]:
    """Optional (records from before it, or with nobody away, have none). Times are finite:
    a NaN or infinite one would never expire (sdmesh/finite.py)."""
    value = obj.get("away", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RecordFormatError("malformed field 'away'")
    away: dict[str, float] = {}
    for host, since in value.items():
        if finite_number(since) is None:
            shown = repr(host[:64])
            raise RecordFormatError(
                f"malformed field 'away': {shown}'s time is not a finite number"
            )
        away[host] = float(since)
    return away


def _vouched(obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    value = obj.get("vouched", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RecordFormatError("malformed field 'vouched'")
    return {host: _str_map(value, host) for host in value}


@dataclass(frozen=True)
class Order:
    """Do ``op`` on leaf ``path`` of ``pool``, for the shepherd holding ``generation``.

    ``unit`` names the placement group the leaf belongs to and ``vcpus``/``memory_mib`` what
    the group needs: the host admits the group on its first order. ``signature``: the
    pool's signature envelope, which the host checks before it runs the leaf."""

    pool: str
    generation: int
    shepherd: str
    digest: str
    path: str
    op: str
    unit: str
    vcpus: int = 0
    memory_mib: int = 0
    signature: bytes = b""

    def to_wire(self) -> list[Any]:
        wire = [
            self.pool,
            self.generation,
            self.shepherd,
            self.digest,
            self.path,
            self.op,
            self.unit,
            self.vcpus,
            self.memory_mib,
        ]
        if self.signature:  # unsigned orders keep the older 9-field shape
            wire.append(self.signature)
        return wire

    @classmethod
    def from_wire(cls, obj: Any) -> Order:
        if not isinstance(obj, list) or len(obj) not in (9, 10):
            raise RecordFormatError("malformed order")
        kinds = (str, int, str, str, str, str, str, int, int, bytes)[: len(obj)]
        if not all(
            isinstance(v, k) and not isinstance(v, bool) for v, k in zip(obj, kinds, strict=True)
        ):
            raise RecordFormatError("malformed order")
        if len(obj) == 10 and len(obj[9]) > MAX_SIGNATURE_BYTES:
            raise RecordFormatError("malformed order")
        order = cls(*obj)
        if order.op not in OPERATIONS:
            raise RecordFormatError(f"unknown operation {order.op!r}")
        if order.vcpus < 0 or order.memory_mib < 0:
            raise RecordFormatError("negative figures in an order")
        problem = generation_refusal(order.generation)
        if problem is not None:
            raise RecordFormatError(f"order: {problem}")
        checked_ids(
            pool=order.pool,
            digest=order.digest,
            names=(order.shepherd,),
            paths=(order.path, order.unit),
        )
        return order


@dataclass(frozen=True)
class Report:
    """What became of a leaf on a host: an operation finished (``error`` if it failed), or
    the leaf ended by itself (``op == "ended"``: its VM died)."""

    pool: str
    generation: int
    host: str
    path: str
    op: str
    error: str | None = None

    def to_wire(self) -> list[Any]:
        return [self.pool, self.generation, self.host, self.path, self.op, self.error]

    @classmethod
    def from_wire(cls, obj: Any) -> Report:
        if not isinstance(obj, list) or len(obj) != 6:
            raise RecordFormatError("malformed report")
        kinds = (str, int, str, str, str)
        if not all(
            isinstance(v, k) and not isinstance(v, bool)
            for v, k in zip(obj[:5], kinds, strict=True)
        ) or not (obj[5] is None or isinstance(obj[5], str)):
            raise RecordFormatError("malformed report")
        if obj[4] not in (*OPERATIONS, "ended"):
            raise RecordFormatError(f"unknown report operation {obj[4]!r}")
        problem = generation_refusal(obj[1])
        if problem is not None:
            raise RecordFormatError(f"report: {problem}")
        checked_ids(pool=obj[0], names=(obj[2],), paths=(obj[3],))
        return cls(*obj)


#: Pool states of a pool that is (still) wanted: a rumor in one of them, newer than a
#: tombstone, means the name was submitted again.
LIVE_STATES: Final = ("deploying", "running")


@dataclass(frozen=True)
class Tomb:
    """A pool's termination record as an agent keeps it: it ends what was ordered up to
    ``generation`` (the pool's newest generation when it was terminated), not a later
    resubmission under the same name, which starts above it. ``since``: when it was heard
    (monotonic), for the tear-down grace and for pruning."""

    generation: int
    since: float

    def covers(self, generation: int) -> bool:
        return generation <= self.generation

    def superseded_by(self, state: str, generation: int) -> bool:
        """A pool rumor (state, generation) announces a resubmission after this tombstone:
        an old tombstone, heard late (a joiner, a restart), must not end the new pool."""
        return state in LIVE_STATES and generation > self.generation

    def encode(self, by: str) -> dict[str, object]:
        return {"by": by, "gen": self.generation}

    @staticmethod
    def generation_of(body: dict[str, object], known: int) -> int:
        """The generation a tombstone rumor covers; for one without (an older agent's), the
        newest this agent knows of the pool (``known``); -1 for a malformed or out-of-bounds
        one (sdmesh.pools.generations)."""
        gen = body.get("gen", known)
        return gen if is_generation(gen) else -1  # -1: out of bounds, refused by the caller


def retry_delay(attempt: int, first: float = 1.0, most: float = 60.0) -> float:
    """Bounded exponential backoff for writes and reports that must get through:
    ``first``, twice that, ... never more than ``most`` seconds."""
    return float(min(most, first * 2 ** min(max(attempt, 0), 30)))


def split_blob(data: bytes) -> list[bytes]:
    """Cut a blob into DHT-sized chunks (at least one)."""
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


def blob_head(chunks: list[bytes]) -> bytes:
    """The record that names a chunked blob: its size in chunks and its hash."""
    whole = b"".join(chunks)
    return _pack({"chunks": len(chunks), "sha256": hashlib.sha256(whole).hexdigest()})


def read_blob_head(data: bytes) -> tuple[int, str]:
    obj = _unpack(data, 4096)
    count = _require(obj, "chunks", int)
    if not 1 <= count <= MAX_SPEC_BYTES // CHUNK_BYTES + 1:
        raise RecordFormatError("bad chunk count")
    return count, _require(obj, "sha256", str)


def join_blob(chunks: list[bytes], sha256: str) -> bytes:
    whole = b"".join(chunks)
    if hashlib.sha256(whole).hexdigest() != sha256:
        raise RecordFormatError("blob chunks do not match their hash")
    return whole
