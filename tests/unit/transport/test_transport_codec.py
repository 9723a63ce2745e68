"""Strict msgpack: what may cross the wire, and everything that must not."""

from __future__ import annotations

import msgpack
import pytest

from sdmesh.transport.codec import (
    Limits,
    MalformedPacket,
    OversizePacket,
    PayloadTooLarge,
    decode,
    encode,
)

LIMITS = Limits(max_size=4096, max_depth=8)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        -(2**63),
        2**64 - 1,
        1.5,
        "héllo",
        b"\x00\xff",
        [],
        {},
        {"type": "ping", "seq": 7, "from": b"node", "meta": {"labels": ["a", "b"]}},
    ],
)
def test_round_trip(obj: object) -> None:
    assert decode(encode(obj, LIMITS), LIMITS) == obj


def test_tuples_travel_as_lists() -> None:
    assert decode(encode((1, (2, 3)), LIMITS), LIMITS) == [1, [2, 3]]


@pytest.mark.parametrize(
    "obj",
    [{1, 2}, object(), {1: "int key"}, {(1,): "tuple key"}, 2**64, bytearray(b"x")],
    ids=["set", "object", "int-key", "tuple-key", "bigint", "bytearray"],
)
def test_encode_refuses_what_peers_would_refuse(obj: object) -> None:
    with pytest.raises(TypeError):
        encode(obj, LIMITS)


def test_encode_refuses_deep_nesting() -> None:
    deep: object = 1
    for _ in range(LIMITS.max_depth + 1):
        deep = [deep]
    with pytest.raises(TypeError, match="nesting"):
        encode(deep, LIMITS)


def test_encode_refuses_big_payloads() -> None:
    with pytest.raises(PayloadTooLarge):
        encode(b"x" * LIMITS.max_size, LIMITS)


def nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc0\xc0",  # trailing data
        b"\x92\xc0",  # truncated array
        b"\xc1",  # never-used type byte
        b"\xa2\xff\xfe",  # invalid UTF-8 str
        b"\x81\x01\x02",  # int map key
        b"\x81\x91\x01\x02",  # array map key
        b"\x82\xa1a\x01\xa1a\x02",  # duplicate key
        msgpack.packb(msgpack.ExtType(5, b"ab")),
        msgpack.packb(msgpack.Timestamp(1, 0)),
        b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
        nested(LIMITS.max_depth + 1),
        nested(5000),  # beyond msgpack's own stack
    ],
    ids=[
        "empty",
        "trailing",
        "truncated",
        "c1",
        "bad-utf8",
        "int-key",
        "array-key",
        "duplicate-key",
        "ext",
        "timestamp",
        "huge-array",
        "too-deep",
        "very-deep",
    ],
)
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode(data, Limits(max_size=100_000, max_depth=8))


def test_nesting_at_the_limit_is_fine() -> None:
    assert decode(nested(LIMITS.max_depth), LIMITS) is not None


def test_oversize_is_rejected_before_parsing() -> None:
    with pytest.raises(OversizePacket):
        decode(b"\xc0" + b"\x00" * LIMITS.max_size, LIMITS)
