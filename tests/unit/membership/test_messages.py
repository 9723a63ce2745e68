"""Wire form of membership messages: exact round trips, and garbage refused loudly."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmesh.membership import (
    Ack,
    Alive,
    Compound,
    Dead,
    MalformedMessage,
    Member,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Rumor,
    RumorUpdate,
    State,
    Suspect,
    decode,
    decode_packet,
    decode_stream,
)
from sdmesh.membership.messages import MAX_COMPOUND_PARTS
from sdmesh.membership.wire import MAX_META_BYTES

META = {
    "capacity": {"vcpus": 64, "memory_mib": 262144, "vcpus_free": 12, "memory_free_mib": 1024},
    "uri_type": "qemu",
    "labels": {"rack": "r01"},
    "images": ["debian-12", "alma-9"],
    "api": "https://10.0.0.1:8443",
    "fingerprint": b"\x00\x01\x02",
    "ratio": 0.5,
    "spare": None,
}

EXAMPLES: list[Message] = [
    Ping(7, "node-a"),
    PingReq(2**32 - 1, "node-b", ("10.0.0.2", 7946), True),
    Ack(0),
    Nack(99),
    Alive("node-c", 3, ("host.example", 1), META),
    Suspect("node-d", 2**40, "node-e"),
    Dead("node-f", 5, "node-f", left=True),
    Dead("node-g", 5, "node-h"),
    Compound((Ping(1, "node-a"), Alive("node-a", 1, ("10.0.0.1", 7946), {}), Ack(2))),
    RumorUpdate(Rumor("pools", "pool-7", 2**64 - 1, "node-a", b"\x00" * 512), 2**32 - 1),
    Compound((Ping(1, "node-a"), RumorUpdate(Rumor("t", "k", 1, "node-b", b""), 0))),
    PushPull(
        "node-b",
        join=False,
        reply=True,
        members=(Member("node-b", ("10.0.0.2", 7946), 0, State.ALIVE, {}),),
        rumors=(
            RumorUpdate(Rumor("pools", "pool-7", 9, "node-a", b"gone"), 30),
            RumorUpdate(Rumor("pööls", "ключ", 3, "node-c", b""), 0),
        ),
    ),
    PushPull(
        "node-a",
        join=True,
        reply=False,
        members=(
            Member("node-a", ("10.0.0.1", 7946), 4, State.ALIVE, META),
            Member("node-b", ("10.0.0.2", 7946), 0, State.SUSPECT, {}),
            Member("node-c", ("10.0.0.3", 7946), 9, State.DEAD, {}),
            Member("node-d", ("10.0.0.4", 7946), 1, State.LEFT, {}),
        ),
    ),
]


def through_msgpack(message: Message) -> object:
    return msgpack.unpackb(msgpack.packb(message.to_wire()))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_msgpack(message: Message) -> None:
    assert decode(through_msgpack(message)) == message


def test_packets_and_streams_are_kept_apart() -> None:
    push_pull = through_msgpack(EXAMPLES[-1])
    with pytest.raises(MalformedMessage):
        decode_packet(push_pull)
    with pytest.raises(MalformedMessage):
        decode_stream(through_msgpack(Ping(1, "a")))
    with pytest.raises(MalformedMessage):
        decode_stream(through_msgpack(RumorUpdate(Rumor("t", "k", 1, "a", b""), 0)))
    assert decode_stream(push_pull) == EXAMPLES[-1]


def test_push_pull_without_rumors_keeps_the_five_field_form() -> None:
    """Peers that predate rumors still understand a mesh that publishes none."""
    old_form = [9, "a", True, False, [["a", 0, 0, "10.0.0.1", 7946, {}]]]
    message = decode_stream(old_form)
    assert isinstance(message, PushPull) and message.rumors == ()
    assert message.to_wire() == old_form
    assert decode_packet(through_msgpack(Ack(3))) == Ack(3)


def alive_wire(**changes: Any) -> list[Any]:
    fields = {"name": "n", "inc": 1, "host": "10.0.0.1", "port": 7946, "meta": {}}
    fields.update(changes)
    return [5, fields["name"], fields["inc"], fields["host"], fields["port"], fields["meta"]]


GARBAGE: dict[str, object] = {
    "not a list": {"tag": 1},
    "empty list": [],
    "bytes": b"\x01\x02",
    "none": None,
    "unknown tag": [42, 1],
    "tag is a string": ["1", 1, "a"],
    "tag is a bool": [True, 1, "a"],
    "ping too short": [1, 5],
    "ping too long": [1, 5, "a", "extra"],
    "seq is a string": [1, "5", "a"],
    "seq is a float": [3, 5.0],
    "seq is a bool": [3, True],
    "seq negative": [3, -1],
    "seq beyond 32 bits": [3, 2**32],
    "empty target": [1, 5, ""],
    "huge target": [1, 5, "x" * 10_000],
    "target not a string": [1, 5, b"abc"],
    "port zero": alive_wire(port=0),
    "port too big": alive_wire(port=70000),
    "host empty": alive_wire(host=""),
    "incarnation negative": alive_wire(inc=-3),
    "incarnation huge": alive_wire(inc=2**70),
    "meta a list": alive_wire(meta=[1, 2]),
    "meta with int keys": alive_wire(meta={1: "x"}),
    "meta too large": alive_wire(meta={"images": ["x" * 200] * 10}),
    "meta too deep": alive_wire(meta={"a": {"b": {"c": {"d": {"e": 1}}}}}),
    "meta with a set": alive_wire(meta={"a": {1, 2}}),
    "meta long string": alive_wire(meta={"a": "x" * (MAX_META_BYTES + 1)}),
    "ping-req nack not bool": [2, 1, "t", "10.0.0.1", 1, 1],
    "dead left not bool": [7, "n", 1, "s", "yes"],
    "suspect missing sender": [6, "n", 1],
    "compound not a list": [8, "parts"],
    "compound empty": [8, []],
    "compound too many parts": [8, [[3, 1]] * (MAX_COMPOUND_PARTS + 1)],
    "compound nested": [8, [[8, [[3, 1]]]]],
    "compound carrying push-pull": [8, [[9, "a", False, False, []]]],
    "compound part garbage": [8, [[3, 1], "junk"]],
    "push-pull bad state": [9, "a", False, False, [["n", 1, 7, "10.0.0.1", 1, {}]]],
    "push-pull short member": [9, "a", False, False, [["n", 1, 0]]],
    "push-pull members not a list": [9, "a", False, False, {"n": 1}],
    "push-pull flags not bool": [9, "a", 0, 1, []],
    "push-pull absurd size": [9, "a", False, False, [None] * 70_000],
    "push-pull rumors not a list": [9, "a", False, False, [], {"t": 1}],
    "push-pull absurd rumor count": [9, "a", False, False, [], [None] * 70_000],
    "push-pull rumor short": [9, "a", False, False, [], [["t", "k", 1, "a", b""]]],
    "push-pull too long": [9, "a", False, False, [], [], []],
    "rumor topic too long": [10, "t" * 33, "k", 1, "a", b"", 0],
    "rumor payload too long": [10, "t", "k", 1, "a", bytes(641), 0],
    "rumor payload a string": [10, "t", "k", 1, "a", "x", 0],
    "rumor ltime zero": [10, "t", "k", 0, "a", b"", 0],
    "rumor age negative": [10, "t", "k", 1, "a", b"", -1],
    "rumor missing age": [10, "t", "k", 1, "a", b""],
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
def test_garbage_raises_malformed_message(garbage: object) -> None:
    with pytest.raises(MalformedMessage):
        decode(garbage)


def test_malformed_message_is_a_value_error() -> None:
    assert issubclass(MalformedMessage, ValueError)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
message_like = st.tuples(st.integers(min_value=0, max_value=10), st.lists(msgpack_values)).map(
    lambda pair: [pair[0], *pair[1]]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(msgpack_values, message_like))
def test_decode_never_fails_in_any_other_way(obj: object) -> None:
    """Arbitrary msgpack-shaped input either decodes or raises MalformedMessage."""
    try:
        message = decode(obj)
    except MalformedMessage:
        return
    assert decode(through_msgpack(message)) == message
