"""``DELETE /v1/pools/{pool}`` with a trust store (issue 12, item 2; review finding L1): a
termination needs an operator signature, the request's (``sdmesh terminate --key``) or the
agent's own ``api-signing-key`` for the caller it authorized; refusals are 403s, counted and
published as ``refused`` events. On the real app, with a real pool service."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import load_security
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import TrustedOperator, TrustStore
from sdmesh.trust.termination import SLACK, TerminationSignature, termination_text

from ..pools.test_pool_service_ends import rumor, service

ALICE = OperatorKey.generate("alice")  # trusted to operate
CAROL = OperatorKey.generate("carol")  # trusted to read only
AGENT_KEY = OperatorKey.generate("agent")  # the agent's api-signing-key, when it has one

Client = TestClient[web.Request, web.Application]


def trust_store() -> TrustStore:
    return TrustStore(
        {
            ALICE.public.key_id: TrustedOperator(ALICE.public, Role.OPERATE),
            CAROL.public.key_id: TrustedOperator(CAROL.public, Role.READ),
            AGENT_KEY.public.key_id: TrustedOperator(AGENT_KEY.public, Role.ADMIN),
        }
    )


async def make_client(tmp_path: Path, signer: OperatorKey | None) -> Client:
    config, token = secured_config(tmp_path)
    agent = Agent(config, load_security(None, insecure=True))
    app = build_app(agent)
    agent.trust = HostTrust(tmp_path / "operators.d", trust_store(), signer)
    pools = service(tmp_path / "pools")
    pools._on_rumor(rumor("pool", "web", {"digest": "d", "state": "running", "generation": 3}))
    agent.pools = pools
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    client.admin = bearer(token)  # type: ignore[attr-defined]
    client.agent = agent  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def unsigning(tmp_path: Path) -> AsyncIterator[Client]:
    """An agent without an api-signing-key."""
    client = await make_client(tmp_path, None)
    yield client
    await client.close()


@pytest.fixture
async def signing(tmp_path: Path) -> AsyncIterator[Client]:
    """An agent with an api-signing-key."""
    client = await make_client(tmp_path, AGENT_KEY)
    yield client
    await client.close()


def tombs(client: Client) -> list[dict[str, Any]]:
    node = client.agent.pools.node  # type: ignore[attr-defined]
    return [msgpack.unpackb(p[2]) for p in node.published if p[0] == "tomb"]


def refused_events(client: Client) -> list[dict[str, Any]]:
    events = client.agent.events.recent()  # type: ignore[attr-defined]
    return [event for _, event in events if event.get("type") == "refused"]


def counts(client: Client) -> dict[str, int]:
    return dict(client.agent.trust.refusals.counts)  # type: ignore[attr-defined]


async def delete(client: Client, body: object = None, pool: str = "web") -> Any:
    headers = client.admin  # type: ignore[attr-defined]
    return await client.delete(f"/v1/pools/{pool}", json=body, headers=headers)


async def test_an_operator_signed_termination_is_published_as_signed(unsigning: Client) -> None:
    text = termination_text(ALICE, "web", 3, 1000.0)
    answer = await delete(unsigning, {"signature": text})
    assert answer.status == 202, await answer.text()
    [tomb] = tombs(unsigning)
    assert tomb["gen"] == 3 + SLACK and tomb["sig"] == base64.b64decode(text)
    assert not refused_events(unsigning)


async def test_unsigned_without_an_api_signing_key_is_a_403_naming_the_fix(
    unsigning: Client,
) -> None:
    answer = await delete(unsigning)
    assert answer.status == 403
    text = await answer.text()
    assert "sdmesh terminate --key KEY" in text and "api-signing-key" in text
    assert not tombs(unsigning)
    [event] = refused_events(unsigning)
    assert event["pool"] == "web" and event["reason"] == "unsigned" and event["host"] == "n0"
    assert counts(unsigning)["unsigned"] == 1


async def test_unsigned_is_signed_by_the_agents_key_for_the_caller_it_authorized(
    signing: Client,
) -> None:
    answer = await delete(signing)
    assert answer.status == 202, await answer.text()
    [tomb] = tombs(signing)
    made = TerminationSignature.decode(tomb["sig"])
    assert made.key_id == AGENT_KEY.public.key_id and made.generation == 3 + SLACK
    assert tomb["gen"] == 3 + SLACK


@pytest.mark.parametrize(
    ("signer", "pool", "reason"),
    [
        (CAROL, "web", "role-not-granted"),
        (OperatorKey.generate("mallory"), "web", "unknown-key"),
        (ALICE, "db", "wrong-pool"),
        (ALICE, "web", "generation-not-covered"),
    ],
)
async def test_a_signature_that_does_not_cover_the_pool_is_a_403_and_an_event(
    signing: Client, signer: OperatorKey, pool: str, reason: str
) -> None:
    """Even where the agent could sign: a signature the caller sends is checked, not
    replaced (a stale one, signed before a takeover past the slack, is refused too)."""
    text = termination_text(signer, pool, 3, 1000.0)
    if reason == "generation-not-covered":
        body = {"digest": "d", "state": "running", "generation": 3 + SLACK + 1}
        signing.agent.pools._on_rumor(rumor("pool", "web", body))  # type: ignore[attr-defined]
    answer = await delete(signing, {"signature": text})
    assert answer.status == 403, await answer.text()
    [event] = refused_events(signing)
    assert event["reason"] == reason and event["pool"] == "web"
    assert counts(signing)[reason] == 1
    assert not tombs(signing)


async def test_bad_requests_are_4xx_and_change_nothing(signing: Client) -> None:
    headers = signing.admin  # type: ignore[attr-defined]
    for body in ({"signature": "not base64!"}, {"signature": 7}, {"signature": "QUJD"}):
        answer = await delete(signing, body)
        assert answer.status == 400, (body, await answer.text())
    junk = await signing.delete("/v1/pools/web", data=b"[1, 2", headers=headers)
    assert junk.status == 400
    far = termination_text(ALICE, "web", 3 + 5000, 1000.0)  # would poison the name
    answer = await delete(signing, {"signature": far})
    assert answer.status == 400 and "above the newest this host knows" in await answer.text()
    assert (await delete(signing, pool="nowhere")).status == 404
    assert (await delete(signing, pool="%3A")).status == 400  # no pool id: never signed
    assert not tombs(signing) and not refused_events(signing)


async def test_a_read_token_cannot_terminate_even_with_an_operators_signature(
    signing: Client,
) -> None:
    admin = signing.admin  # type: ignore[attr-defined]
    made = await signing.post("/v1/tokens", json={"name": "viewer", "role": "read"}, headers=admin)
    reader = bearer(str((await made.json())["token"]))
    text = termination_text(ALICE, "web", 3, 1000.0)
    answer = await signing.delete("/v1/pools/web", json={"signature": text}, headers=reader)
    assert answer.status == 403 and "operate" in await answer.text()
    assert not tombs(signing)


# ------------------------------------------------------------ after a cold review
@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (TrustStore({}, frozenset({AGENT_KEY.public.key_id})), "revoked-key"),
        (
            TrustStore({AGENT_KEY.public.key_id: TrustedOperator(AGENT_KEY.public, Role.READ)}),
            "role-not-granted",
        ),
        (TrustStore({}), "unknown-key"),
    ],
)
async def test_the_agents_own_signature_is_checked_against_its_trust_store(
    signing: Client, store: TrustStore, reason: str
) -> None:
    """The api-signing-key revoked, demoted or no longer trusted: the agent's own signature
    ends nothing (it would end nothing on a host trusting the same operators), and the
    refusal is a 403, an event and a count, as for a signature the caller sends."""
    trust = signing.agent.trust  # type: ignore[attr-defined]
    signing.agent.trust = HostTrust(trust.operators_dir, store, AGENT_KEY)  # type: ignore[attr-defined]
    answer = await delete(signing)
    assert answer.status == 403, await answer.text()
    [event] = refused_events(signing)
    assert event["reason"] == reason and event["pool"] == "web"
    assert counts(signing)[reason] == 1
    assert not tombs(signing)


async def test_near_the_largest_generation_the_agent_signs_at_most_it(signing: Client) -> None:
    """newest + SLACK above 2^31-1 made a signature nothing accepts (an HTTP 500 once)."""
    from sdmesh.pools.generations import MAX_GENERATION
    from sdmesh.pools.records import PoolRecord

    pools = signing.agent.pools  # type: ignore[attr-defined]
    await pools.write_record(PoolRecord("web", "d" * 64, MAX_GENERATION - 3, "h1", "running"))
    floor = await signing.get("/v1/pools/web/termination", headers=signing.admin)  # type: ignore[attr-defined]
    assert await floor.json() == {
        "pool": "web",
        "floor": MAX_GENERATION - 3,
        "sign_up_to": MAX_GENERATION,
    }
    answer = await delete(signing)
    assert answer.status == 202, await answer.text()
    [tomb] = tombs(signing)
    assert tomb["gen"] == MAX_GENERATION
    assert TerminationSignature.decode(tomb["sig"]).generation == MAX_GENERATION


async def test_the_termination_floor_is_what_delete_checks_against(signing: Client) -> None:
    """GET /v1/pools/P/termination: the floor (here the tombstone of an earlier termination
    from the dashboard, 3 + SLACK, above the pool's status) and what to sign; a 404 only
    where DELETE is one too; operate, like DELETE."""
    admin = signing.admin  # type: ignore[attr-defined]
    assert (await delete(signing)).status == 202  # the dashboard's: up to 3 + SLACK
    floor = await (await signing.get("/v1/pools/web/termination", headers=admin)).json()
    assert floor == {"pool": "web", "floor": 3 + SLACK, "sign_up_to": 3 + 2 * SLACK}
    text = termination_text(ALICE, "web", floor["floor"], 1000.0)
    assert (await delete(signing, {"signature": text})).status == 202
    stale = termination_text(ALICE, "web", 3, 1000.0)  # signed from the status: too low
    assert (await delete(signing, {"signature": stale})).status == 403
    assert (await signing.get("/v1/pools/nowhere/termination", headers=admin)).status == 404
    assert (await signing.get("/v1/pools/%3A/termination", headers=admin)).status == 400
    made = await signing.post("/v1/tokens", json={"name": "viewer", "role": "read"}, headers=admin)
    reader = bearer(str((await made.json())["token"]))
    assert (await signing.get("/v1/pools/web/termination", headers=reader)).status == 403


async def test_the_shepherds_answer_is_the_callers(unsigning: Client) -> None:
    """A refusal by the pool's shepherd (its own trust store, or a run above the signed
    generation) reaches the caller as a 403 or a 409 with the reason, not a 202 that ends
    nothing; an unreachable shepherd is a 202 saying the tombstone travels as gossip."""
    from sdmesh.pools.ownership import by_distance

    pools = unsigning.agent.pools  # type: ignore[attr-defined]
    pool = next(p for p in (f"db{i}" for i in range(100)) if pools.shepherd_for(p) != "h0")
    shepherd = by_distance(pool, ["h0", "h1", "h2"])[0]
    pools._on_rumor(rumor("pool", pool, {"digest": "d", "state": "running", "generation": 3}))
    text = termination_text(ALICE, pool, 3, 1000.0)
    pools.client.replies = [
        {"ok": False, "error": "key x is not trusted here"},
        {"ok": False, "error": "it runs generation 40", "conflict": True},
        OSError("unreachable"),
    ]
    for status, said in [
        (403, f"its shepherd {shepherd} refused: key x is not trusted here"),
        (409, f"its shepherd {shepherd} refused: it runs generation 40"),
    ]:
        answer = await delete(unsigning, {"signature": text}, pool)
        assert answer.status == status and said in await answer.text()
        assert not tombs(unsigning)
    answer = await delete(unsigning, {"signature": text}, pool)
    assert answer.status == 202
    assert "reaches it as gossip" in (await answer.json())["detail"]
    assert [tomb["gen"] for tomb in tombs(unsigning)] == [3 + SLACK]
