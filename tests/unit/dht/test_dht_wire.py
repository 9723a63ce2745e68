"""DHT RPC messages: what a handler or a caller may see, and what is refused before that."""

from __future__ import annotations

from typing import Any

import pytest

from sdmesh.dht import wire
from sdmesh.dht.lookup import Contact
from sdmesh.dht.records import Decision

MSG = b"m" * 20
NODE = b"n" * 20
TARGET = b"t" * 20


def test_requests_round_trip() -> None:
    parsed = wire.parse(wire.request(MSG, wire.FIND_VALUE, NODE, TARGET))
    assert parsed == wire.Request(MSG, wire.FIND_VALUE, NODE, (TARGET,))
    assert wire.parse(wire.request(MSG, wire.PING, NODE)) == wire.Request(MSG, "ping", NODE, ())
    store = wire.parse(wire.request(MSG, wire.STORE, NODE, TARGET, b"record"))
    assert isinstance(store, wire.Request) and store.args == (TARGET, b"record")


def test_responses_carry_the_responder() -> None:
    parsed = wire.parse(wire.response(MSG, NODE, "store"))
    assert parsed == wire.Response(MSG, NODE, "store")


@pytest.mark.parametrize(
    "message",
    [
        None,
        "ping",
        [],
        [0, MSG, "ping"],
        [0, MSG, "ping", [NODE], "extra"],
        [2, MSG, "ping", [NODE]],
        [True, MSG, "ping", [NODE]],
        [0, b"short", "ping", [NODE]],
        [0, MSG, "stun", [NODE]],
        [0, MSG, ["ping"], [NODE]],
        [0, MSG, "ping", [b"short"]],
        [0, MSG, "ping", []],
        [0, MSG, "ping", NODE],
        [0, MSG, "find_node", [NODE, b"not an id"]],
        [0, MSG, "find_node", [NODE, "text"]],
        [0, MSG, "store", [NODE, TARGET]],
        [0, MSG, "store", [NODE, TARGET, b"x" * 100_000]],
        [1, MSG, b"short responder", True],
    ],
)
def test_malformed_messages_are_refused(message: Any) -> None:
    with pytest.raises(wire.MalformedRpc):
        wire.parse(message)


def test_contacts_round_trip() -> None:
    contacts = [Contact(NODE, "10.0.0.1", 7947), Contact(TARGET, "::1", 1)]
    assert wire.parse_contacts(wire.encode_contacts(contacts)) == contacts


@pytest.mark.parametrize(
    "item",
    [
        [NODE, "host.example", 7947],  # names would need DNS on the event loop
        [NODE, "10.0.0.1", 0],
        [NODE, "10.0.0.1", 70000],
        [NODE, "10.0.0.1", True],
        [b"short", "10.0.0.1", 1],
        [NODE, "10.0.0.1"],
        "10.0.0.1:1",
    ],
)
def test_bad_contacts_are_refused(item: Any) -> None:
    with pytest.raises(wire.MalformedRpc):
        wire.parse_contacts([item])


def test_too_many_contacts_are_refused() -> None:
    with pytest.raises(wire.MalformedRpc):
        wire.parse_contacts([[NODE, "10.0.0.1", 1]] * (wire.MAX_CONTACTS + 1))


def test_value_answers() -> None:
    answer = wire.parse_value_answer(wire.value_answer([Contact(NODE, "10.0.0.1", 1)], b"rec"))
    assert answer.record == b"rec" and answer.contacts[0].id == NODE
    assert wire.parse_value_answer({"nodes": [], "record": None}).record is None
    bad: Any
    for bad in ({"nodes": []}, {"nodes": [], "record": "text"}, [], {"nodes": 1, "record": None}):
        with pytest.raises(wire.MalformedRpc):
            wire.parse_value_answer(bad)


def test_decisions_and_ids() -> None:
    assert wire.parse_decision("stale") is Decision.STALE
    with pytest.raises(wire.MalformedRpc):
        wire.parse_decision("maybe")
    assert wire.parse_node_id(NODE) == NODE
    with pytest.raises(wire.MalformedRpc):
        wire.parse_node_id("n" * 20)
