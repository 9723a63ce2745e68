"""NaN and infinities are refused, with a located error, wherever a number arrives from a peer
or a caller (review L5): API JSON bodies and query times, keyring instructions, pool records'
``away`` times, member metadata; lease and fence-guard messages keep refusing them."""

from __future__ import annotations

import math
import zlib

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sdmesh.agent import api_input
from sdmesh.agent.keyring_admin import InstructionError, KeyringInstruction
from sdmesh.finite import finite_number, non_finite_at
from sdmesh.ha import guard_wire, lease_wire
from sdmesh.membership.messages import Alive, PushPull, decode
from sdmesh.membership.wire import MalformedMessage, expect_meta
from sdmesh.pools.records import PoolRecord, RecordFormatError
from sdmesh.transport.keyring import generate_key

from .test_api_input_guards import client  # noqa: F401  (the fixture)
from .test_api_keyring import Setup, setup  # noqa: F401  (the fixture)

NON_FINITE = [math.nan, math.inf, -math.inf]


def test_the_helpers_tell_finite_numbers_and_say_where_the_others_are() -> None:
    assert finite_number(3) == 3 and finite_number(2.5) == 2.5
    for value in [*NON_FINITE, True, "1", None, [1]]:
        assert finite_number(value) is None
    assert non_finite_at({"a": [1, 2.0, {"b": 1e308}]}) is None
    assert non_finite_at({"a": [1, {"b": math.inf}]}) == "$.a[1].b is Infinity"
    assert non_finite_at([{"x y": -math.inf}], "body") == "body[0]['x y'] is -Infinity"
    assert non_finite_at({"first": math.nan, "second": math.inf}) == "$.first is NaN"
    deep: object = math.nan
    for _ in range(100_000):  # iterative: depth costs no stack
        deep = [deep]
    assert non_finite_at(deep) is not None


# ---------------------------------------------------------------------------- the API
@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b'{"name": "p", "n": NaN}', "body.n is NaN"),
        (b'{"fields": {"count": Infinity}}', "body.fields.count is Infinity"),
        (b'{"a": [1, -Infinity]}', "body.a[1] is -Infinity"),
        (b'{"big": 1e999}', "body.big is Infinity"),  # json reads it as inf
    ],
)
def test_json_bodies_with_non_finite_numbers_are_bad_input(text: bytes, said: str) -> None:
    with pytest.raises(api_input.BadInput, match="JSON numbers must be finite") as refused:
        api_input.parse_json_object(text)
    assert said in str(refused.value)
    assert api_input.parse_json_object(b'{"n": 1.5e300}') == {"n": 1.5e300}


async def test_the_pools_api_answers_400_naming_the_number(
    client: TestClient[web.Request, web.Application],  # noqa: F811
) -> None:
    body = b'{"name": "p", "descriptor": "sfConfig extends { x 1; }", "replicas": NaN}'
    answer = await client.post("/v1/pools", data=body, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert "body.replicas is NaN: JSON numbers must be finite" in await answer.text()
    assert client.agent.pools.submitted == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("since", ["nan", "inf", "-Infinity"])
async def test_an_event_history_since_a_non_finite_time_is_400(
    client: TestClient[web.Request, web.Application],  # noqa: F811
    since: str,
) -> None:
    answer = await client.get("/v1/events", params={"since": since})
    assert answer.status == 400
    assert "finite" in await answer.text()


async def test_the_keyring_routes_read_bodies_the_same_way(setup: Setup) -> None:  # noqa: F811
    api, agent = setup
    before = agent.security.keyring.keys if agent.security.keyring else ()
    body = b'{"op": "use", "key_id": "00112233", "mesh": Infinity}'
    answer = await api.post("/v1/keyring", data=body, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert "body.mesh is Infinity" in await answer.text()
    revoke = b'{"revocation": "AAAA", "at": NaN}'
    answer = await api.post(
        "/v1/identity/revocations", data=revoke, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400 and "body.at is NaN" in await answer.text()
    assert agent.security.keyring is not None and agent.security.keyring.keys == before


# ---------------------------------------------------------------------------- the mesh
@pytest.mark.parametrize("at", NON_FINITE)
def test_a_keyring_instruction_stamped_with_a_non_finite_time_is_malformed(at: float) -> None:
    """NaN was never too old (abs(now - nan) > MAX_AGE is false) and never a replay (nan !=
    nan): a captured instruction could be applied again and again."""
    wire = KeyringInstruction("install", generate_key(), "b", 1.0e9).to_wire()
    wire["at"] = at
    with pytest.raises(InstructionError, match="'at' is not a finite time"):
        KeyringInstruction.from_wire(wire)


def _record(away: object) -> bytes:
    body = {
        "pool": "web",
        "digest": "0" * 64,
        "gen": 3,
        "shepherd": "h0",
        "state": "running",
        "placement": {"sfConfig:vm": "h1"},
        "reason": "",
        "away": away,
        "vouched": {},
    }
    return zlib.compress(msgpack.packb(body, use_bin_type=True))


@pytest.mark.parametrize("since", NON_FINITE)
def test_a_record_with_a_non_finite_away_time_is_refused(since: float) -> None:
    assert PoolRecord.decode(_record({"h1": 1.0e9})).away == {"h1": 1.0e9}
    with pytest.raises(RecordFormatError, match="'h1''s time is not a finite number"):
        PoolRecord.decode(_record({"h1": since}))


@pytest.mark.parametrize("value", NON_FINITE)
def test_member_metadata_with_a_non_finite_number_is_malformed(value: float) -> None:
    """A capacity of NaN made every other agent's placement raise (``int(nan)``)."""
    meta = {"capacity": {"vcpus": 8, "memory_mib": value}}
    with pytest.raises(MalformedMessage, match=r"meta\.capacity\.memory_mib is "):
        expect_meta(meta)
    alive = Alive("b", 1, ("127.0.0.1", 7946), {"capacity": {"vcpus": 8}}).to_wire()
    alive[5] = meta  # [tag, name, incarnation, host, port, meta]
    with pytest.raises(MalformedMessage, match="must be finite"):
        decode(alive)
    pushed = PushPull("a", False, False, ()).to_wire()
    pushed[4] = [["b", 1, 0, "127.0.0.1", 7946, meta]]
    with pytest.raises(MalformedMessage, match="must be finite"):
        decode(pushed)


@pytest.mark.parametrize("value", NON_FINITE)
def test_lease_and_guard_messages_keep_refusing_non_finite_numbers(value: float) -> None:
    with pytest.raises(lease_wire.LeaseWireError, match="duration"):
        lease_wire.decode({"rpc": lease_wire.RPC, "m": ["req", "h1", 1, value, []]})
    with pytest.raises(lease_wire.LeaseWireError, match="duration"):
        lease_wire.decode({"rpc": lease_wire.RPC, "m": ["answer", "v", "h", "t", value]})
    text = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    arm = '{"op": "arm", "fence_at": ' + text + ', "until": 1, "fenceable": []}'
    with pytest.raises(guard_wire.GuardMessageError, match="finite"):
        guard_wire.decode(arm.encode())
