"""Record encoding and the accept rule: newer authenticated versions win, nothing else does."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from sdmesh.dht.ids import location_of
from sdmesh.dht.records import (
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    MAX_VERSION,
    Decision,
    DhtRecord,
    RecordAuthority,
    RecordError,
    accept,
    newest,
)
from sdmesh.transport import Keyring

K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))
WRITER = b"w" * 20
AUTHORITY = RecordAuthority(Keyring([K1]), cluster="test")


def record(
    generation: int = 1,
    sequence: int = 0,
    value: bytes = b"v",
    key: bytes = b"pool/a",
    **kw: object,
) -> DhtRecord:
    fields: dict[str, object] = {"writer": WRITER, "timestamp_ms": 1_700_000_000_000, **kw}
    return AUTHORITY.authenticate(DhtRecord(key, value, generation, sequence, **fields))  # type: ignore[arg-type]


def test_encode_decode_round_trip() -> None:
    original = record(3, 7, b"\x00\xff" * 100)
    assert DhtRecord.decode(original.encode()) == original
    assert AUTHORITY.verify(DhtRecord.decode(original.encode()))


@pytest.mark.parametrize(
    "fields",
    [
        [1, b"k", b"v", 1, 0, WRITER, 0, b"", b"", b"extra"],  # too many fields
        [1, b"k", b"v", 1, 0, WRITER, 0, b""],  # too few
        [2, b"k", b"v", 1, 0, WRITER, 0, b"", b""],  # unknown format
        [True, b"k", b"v", 1, 0, WRITER, 0, b"", b""],  # bool is not a format number
        [1, "k", b"v", 1, 0, WRITER, 0, b"", b""],  # str key
        [1, b"k", b"v", True, 0, WRITER, 0, b"", b""],  # bool generation
        [1, b"k", b"v", 1.0, 0, WRITER, 0, b"", b""],  # float generation
        [1, b"k", b"v", -1, 0, WRITER, 0, b"", b""],  # negative generation
        [1, b"k", b"v", 1, 0, b"short", 0, b"", b""],  # writer not a node id
        [1, b"", b"v", 1, 0, WRITER, 0, b"", b""],  # empty key
        [1, b"k", b"v", 1, 0, WRITER, 0, b"abcd", b""],  # key id without authenticator
        {"key": b"k"},  # not an array
    ],
)
def test_decode_refuses_malformed_records(fields: object) -> None:
    with pytest.raises(RecordError):
        DhtRecord.decode(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([1, b"k"], use_bin_type=True) + b"trailing",
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\x91" * 100 + b"\xc0",  # deep nesting
        b"\xc6\xff\xff\xff\xff",  # a bin claiming 4 GiB
    ],
)
def test_decode_refuses_garbage(data: bytes) -> None:
    with pytest.raises(RecordError):
        DhtRecord.decode(data)


def test_decode_refuses_absurd_sizes() -> None:
    big = msgpack.packb([1, b"k", b"v" * (MAX_VALUE_SIZE + 1), 1, 0, WRITER, 0, b"", b""])
    with pytest.raises(RecordError):
        DhtRecord.decode(big)
    with pytest.raises(RecordError):
        DhtRecord.decode(b"\x00" * (MAX_VALUE_SIZE * 2))


def test_first_record_is_stored() -> None:
    assert accept(None, record(), AUTHORITY) is Decision.STORE


@pytest.mark.parametrize(
    ("held", "offered"),
    [((1, 5), (2, 0)), ((1, 5), (1, 6)), ((0, 0), (MAX_VERSION, MAX_VERSION))],
)
def test_newer_version_replaces(held: tuple[int, int], offered: tuple[int, int]) -> None:
    assert accept(record(*held), record(*offered, value=b"new"), AUTHORITY) is Decision.STORE


@pytest.mark.parametrize(
    ("held", "offered"),
    [((2, 0), (1, 99)), ((1, 6), (1, 5)), ((5, 5), (0, 0))],
)
def test_stale_generation_or_sequence_is_refused(
    held: tuple[int, int], offered: tuple[int, int]
) -> None:
    assert accept(record(*held), record(*offered), AUTHORITY) is Decision.STALE


def test_same_version_same_content_is_a_duplicate() -> None:
    assert accept(record(1, 1), record(1, 1), AUTHORITY) is Decision.DUPLICATE
    assert Decision.DUPLICATE.accepted


def test_same_version_different_content_is_a_conflict() -> None:
    assert accept(record(1, 1, b"a"), record(1, 1, b"b"), AUTHORITY) is Decision.CONFLICT
    other_writer = record(1, 1, writer=b"x" * 20)
    assert accept(record(1, 1), other_writer, AUTHORITY) is Decision.CONFLICT
    later_time = record(1, 1, timestamp_ms=1_800_000_000_000)
    assert accept(record(1, 1), later_time, AUTHORITY) is Decision.CONFLICT
    assert not Decision.CONFLICT.accepted


def test_unauthenticated_record_is_refused_even_if_newer() -> None:
    bare = DhtRecord(b"pool/a", b"v", 9, 0, WRITER, 0)
    assert accept(record(1), bare, AUTHORITY) is Decision.UNAUTHENTICATED
    assert accept(None, bare, AUTHORITY) is Decision.UNAUTHENTICATED


def test_foreign_cluster_key_is_refused() -> None:
    foreign = RecordAuthority(Keyring([K2]), cluster="test").authenticate(record(9))
    assert accept(record(1), foreign, AUTHORITY) is Decision.UNAUTHENTICATED


def test_same_key_other_cluster_name_is_refused() -> None:
    other = RecordAuthority(Keyring([K1]), cluster="other").authenticate(record(9))
    assert accept(None, other, AUTHORITY) is Decision.UNAUTHENTICATED


@pytest.mark.parametrize(
    "change",
    [
        {"value": b"tampered"},
        {"generation": 99},
        {"sequence": 99},
        {"writer": b"z" * 20},
        {"timestamp_ms": 1},
        {"key": b"pool/b"},
    ],
)
def test_tampered_record_is_refused(change: dict[str, object]) -> None:
    tampered = dataclasses.replace(record(1), **change)  # type: ignore[arg-type]
    assert accept(None, tampered, AUTHORITY) is Decision.UNAUTHENTICATED


def test_flipped_authenticator_bit_is_refused() -> None:
    good = record()
    bad_tag = bytes([good.authenticator[0] ^ 1]) + good.authenticator[1:]
    assert accept(None, dataclasses.replace(good, authenticator=bad_tag), AUTHORITY) is (
        Decision.UNAUTHENTICATED
    )


def test_record_offered_under_another_location_is_invalid() -> None:
    offered = record(key=b"pool/a")
    assert accept(None, offered, AUTHORITY, location=location_of(b"pool/b")) is Decision.INVALID
    assert accept(None, offered, AUTHORITY, location=location_of(b"pool/a")) is Decision.STORE


@pytest.mark.parametrize(
    "change",
    [
        {"value": b"v" * (MAX_VALUE_SIZE + 1)},
        {"key": b"k" * (MAX_KEY_SIZE + 1)},
        {"key": b""},
        {"generation": MAX_VERSION + 1},
        {"sequence": -1},
        {"writer": b"short"},
    ],
)
def test_absurd_records_are_invalid(change: dict[str, object]) -> None:
    absurd = dataclasses.replace(record(), **change)  # type: ignore[arg-type]
    assert accept(None, absurd, AUTHORITY) is Decision.INVALID
    with pytest.raises(RecordError):
        AUTHORITY.authenticate(absurd)


def test_key_rotation_verifies_with_any_installed_key() -> None:
    ring = Keyring([K1])
    authority = RecordAuthority(ring, cluster="test")
    old = authority.authenticate(record())
    ring.install(K2)
    ring.use(K2)
    assert authority.verify(old)
    assert not authority.is_current(old)
    renewed = authority.authenticate(old)
    assert authority.is_current(renewed)
    assert accept(old, renewed, authority) is Decision.DUPLICATE  # same content, newer key
    ring.remove(K1)
    assert not authority.verify(old)
    assert authority.verify(renewed)


def test_insecure_mode_accepts_only_unauthenticated_records() -> None:
    insecure = RecordAuthority(None)
    bare = insecure.authenticate(record())
    assert bare.authenticator == b"" and bare.key_id == b""
    assert accept(None, bare, insecure) is Decision.STORE
    assert accept(None, record(), insecure) is Decision.UNAUTHENTICATED
    assert accept(None, bare, AUTHORITY) is Decision.UNAUTHENTICATED


def test_newest_orders_by_version_then_deterministically() -> None:
    assert newest([]) is None
    assert newest([record(1, 9), record(2, 0), record(1, 10)]) == record(2, 0)
    a, b = record(3, 3, b"a"), record(3, 3, b"b")
    assert newest([a, b]) == newest([b, a])
