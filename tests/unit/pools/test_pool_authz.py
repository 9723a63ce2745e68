"""Orders and records are authorized, not just authenticated (issue 12, item 2): bounded
generations, orders only from an entitled shepherd, submissions only where the view says so;
each refusal changes nothing and is counted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sdmesh.agent import pools as ap
from sdmesh.pools import authz
from sdmesh.pools import host as hc
from sdmesh.pools.generations import (
    MAX_GENERATION,
    TERMINATE_STEP,
    generation_refusal,
    is_generation,
    termination_refusal,
)
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import Order, PoolRecord, PoolSpec, RecordFormatError, Report, Tomb

from .test_pool_service_ends import rumor, service

HUGE = (2**62, 2**63, 2**64 - 1, MAX_GENERATION + 1)
NAMES = ["h0", "h1", "h2", "h3", "h4", "h5"]


# ---------------------------------------------------------------- generations, pure
def test_generations_are_bounded_ints() -> None:
    assert is_generation(0) and is_generation(1) and is_generation(MAX_GENERATION)
    for bad in (*HUGE, -1, True, 1.0, "3", None):
        assert not is_generation(bad)
        assert generation_refusal(bad) is not None
    assert generation_refusal(2**64 - 1) == f"generation out of range (0 to {MAX_GENERATION})"


def test_a_termination_may_not_reach_far_above_what_the_host_knows() -> None:
    assert termination_refusal(7, 7) is None
    assert termination_refusal(7 + TERMINATE_STEP, 7) is None
    assert termination_refusal(8 + TERMINATE_STEP, 7) is not None
    assert termination_refusal(TERMINATE_STEP, 0) is None  # a pool this host never heard of
    for huge in HUGE:
        assert termination_refusal(huge, MAX_GENERATION) is not None


def test_decoders_refuse_out_of_bounds_generations() -> None:
    for huge in HUGE:
        with pytest.raises(RecordFormatError, match="generation out of range"):
            Order.from_wire(["web", huge, "h1", "d", "p", "deploy", "p", 1, 1])
        with pytest.raises(RecordFormatError, match="generation out of range"):
            Report.from_wire(["web", huge, "h1", "p", "deploy", None])
        record = PoolRecord("web", "d" * 64, 1, "h1")
        body = msgpack.unpackb(zlib.decompress(record.encode()))
        body["gen"] = huge
        with pytest.raises(RecordFormatError, match="generation out of range"):
            PoolRecord.decode(zlib.compress(msgpack.packb(body)))
        assert Tomb.generation_of({"by": "h1", "gen": huge}, 3) == -1
    with pytest.raises(RecordFormatError):
        Order.from_wire(["web", -1, "h1", "d", "p", "deploy", "p", 1, 1])
    assert Order.from_wire(["web", MAX_GENERATION, "h1", "d", "p", "deploy", "p", 1, 1])


# ---------------------------------------------------------------------- authz, pure
def test_the_closest_members_and_the_followed_shepherd_are_entitled() -> None:
    ranked = by_distance("web", NAMES)
    entitled = authz.entitled_shepherds("web", NAMES)
    assert entitled == set(ranked[: authz.SHEPHERD_RANKS])
    assert authz.entitled_shepherds("web", NAMES, followed=ranked[-1]) == {*entitled, ranked[-1]}
    assert authz.order_refusal("web", ranked[0], None, entitled) is None
    assert authz.order_refusal("web", ranked[-1], None, entitled) == (
        authz.NOT_SHEPHERD,
        f"{ranked[-1]} is not the shepherd of pool web in this host's view",
    )
    reason, _ = authz.order_refusal("web", ranked[0], lambda name: False, entitled) or ("", "")
    assert reason == authz.WRONG_SENDER
    assert authz.submit_refusal("web", "h0", "h0") is None
    assert authz.submit_refusal("web", "h0", "h1") is not None


def test_refusals_are_counted_and_warned_at_most_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = authz.MeshRefusals(every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sdmesh.pools.authz"):
        for _ in range(5):
            refusals.refuse(authz.TOMBSTONE, "forged")
        now[0] = 61.0
        refusals.refuse(authz.TOMBSTONE, "forged")
    assert refusals.counts[authz.TOMBSTONE] == 6
    assert len(caplog.records) == 2
    assert dict(refusals.samples())[authz.NOT_SHEPHERD] == 0


# ------------------------------------------------------------------ the pool service
def hosting_service(tmp_path: Path) -> Any:
    """h0 hosting a running leaf of pool web at generation 3, shepherded by web's rightful
    shepherd among NAMES."""
    svc = service(tmp_path, NAMES)
    shepherd = by_distance("web", NAMES)[0]
    svc.host.handle(hc.Recovered("web", "sfConfig:vm", "sfConfig:vm", 3, shepherd, 1, 256))
    svc._on_rumor(rumor("pool", "web", {"digest": "d", "state": "running", "generation": 3}))
    return svc


def unchanged(svc: Any) -> None:
    assert "web" not in svc.tombs
    assert svc.host.inventory("web") == {"sfConfig:vm": 3}
    assert svc.host.pools["web"].generation == 3
    assert not [p for p in svc.node.published if p[0] == "tomb"]


@pytest.mark.parametrize("huge", HUGE)
def test_a_forged_terminate_with_a_huge_generation_changes_nothing(
    tmp_path: Path, huge: int
) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        reply = await svc.handle_rpc({"rpc": "terminate", "pool": "web", "generation": huge})
        assert reply["ok"] is False and "generation out of range" in reply["error"]
        for bad in ("x", True, -5, 3 + TERMINATE_STEP + 1):
            reply = await svc.handle_rpc({"rpc": "terminate", "pool": "web", "generation": bad})
            assert reply["ok"] is False
        unchanged(svc)
        assert svc.refusals.counts[authz.TOMBSTONE] == 5

    asyncio.run(go())


def test_out_of_bounds_tombstones_and_rumors_change_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        for huge in HUGE:
            svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": huge}))
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 3 + TERMINATE_STEP + 1}))
        svc._on_rumor(
            rumor("pool", "web", {"digest": "d", "state": "running", "generation": 2**64 - 1})
        )
        unchanged(svc)
        assert svc.known["web"].generation == 3
        assert svc.refusals.counts[authz.TOMBSTONE] == len(HUGE) + 1
        assert svc.refusals.counts[authz.GENERATION] == 1
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 4}))  # within bounds: applied
        assert svc.tombs["web"].generation == 4

    asyncio.run(go())


def test_orders_from_a_member_that_is_not_the_shepherd_change_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        ranked = by_distance("web", NAMES)
        intruders = [*ranked[authz.SHEPHERD_RANKS :], "mallory"]
        for intruder in intruders:
            order = Order("web", 4, intruder, "d", "sfConfig:vm", "terminate", "sfConfig:vm")
            reply = await svc.handle_rpc(
                {"rpc": "orders", "orders": [order.to_wire()]}, lambda name: True
            )
            outcome, reason, _ = reply["answers"][0]
            assert outcome == "unreachable"
            assert reason == f"{intruder} is not the shepherd of pool web in this host's view"
        unchanged(svc)
        assert svc.refusals.counts[authz.NOT_SHEPHERD] == len(intruders)

    asyncio.run(go())


def test_an_order_naming_the_shepherd_from_another_member_changes_nothing(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        shepherd = by_distance("web", NAMES)[0]
        forged = Order("web", 4, shepherd, "d", "sfConfig:vm", "terminate", "sfConfig:vm")
        good = Order("web", 3, shepherd, "d", "sfConfig:other", "deploy", "sfConfig:other", 1, 1)
        reply = await svc.handle_rpc(
            {"rpc": "orders", "orders": [forged.to_wire(), good.to_wire()]},
            lambda name: name == "mallory",
        )
        assert reply["answers"][0][0] == "unreachable"
        assert reply["answers"][1][0] == "unreachable"
        unchanged(svc)
        assert svc.refusals.counts[authz.WRONG_SENDER] == 2
        # From the shepherd itself, the same order goes through.
        reply = await svc.handle_rpc(
            {"rpc": "orders", "orders": [forged.to_wire()]}, lambda name: name == shepherd
        )
        assert reply["answers"][0][0] == "accepted"
        assert svc.host.pools["web"].generation == 4

    asyncio.run(go())


def test_a_successor_may_order_the_host_during_a_takeover(tmp_path: Path) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        successor = by_distance("web", NAMES)[1]
        order = Order("web", 4, successor, "d", "sfConfig:vm", "start", "sfConfig:vm")
        reply = await svc.handle_rpc(
            {"rpc": "orders", "orders": [order.to_wire()]}, lambda name: name == successor
        )
        assert reply["answers"][0][0] != "unreachable"
        assert svc.host.pools["web"].generation == 4
        assert sum(svc.refusals.counts.values()) == 0

    asyncio.run(go())


def spec_wire(pool: str) -> bytes:
    text = "sfConfig extends { }"
    return PoolSpec(pool, text, hashlib.sha256(text.encode()).hexdigest(), {}, "op").encode()


def test_a_submit_to_a_host_its_own_view_does_not_make_shepherd_is_refused(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        pool = next(p for p in (f"web{i}" for i in range(100)) if by_distance(p, NAMES)[0] != "h0")
        svc = service(tmp_path, NAMES)
        reply = await svc.handle_rpc({"rpc": "submit", "spec": spec_wire(pool), "generation": 1})
        assert reply == {
            "ok": False,
            "error": f"h0 is not the shepherd of pool {pool} in its own view",
        }
        assert pool not in svc.shepherding and pool not in svc.known
        assert svc.refusals.counts[authz.SUBMIT_NOT_SHEPHERD] == 1
        for huge in HUGE:
            reply = await svc.handle_rpc(
                {"rpc": "submit", "spec": spec_wire(pool), "generation": huge}
            )
            assert reply["ok"] is False and "generation out of range" in reply["error"]
        assert svc.refusals.counts[authz.GENERATION] == len(HUGE)

    asyncio.run(go())


def test_reports_inventories_and_hand_overs_speak_only_for_their_sender(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        delivered: list[list[Report]] = []
        svc._deliver_reports = lambda reports: delivered.append(reports) or []  # type: ignore[method-assign]
        report = Report("web", 3, "h2", "sfConfig:vm", "ended")
        await svc.handle_rpc({"rpc": "reports", "reports": [report.to_wire()]}, lambda n: n == "h9")
        assert delivered == [[]]
        reply = await svc.handle_rpc(
            {"rpc": "inventory", "pool": "web", "host": "h2", "leaves": {"sfConfig:vm": 3}},
            lambda n: n == "h9",
        )
        assert "did not come from it" in reply["error"]
        reply = await svc.handle_rpc(
            {"rpc": "handover", "from": "h2", "pools": []}, lambda n: n == "h9"
        )
        assert "did not come from it" in reply["error"]
        assert "h2" not in svc.departing
        assert svc.refusals.counts[authz.WRONG_SENDER] == 3

    asyncio.run(go())


def test_refusals_show_in_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from sdmesh.agent.metrics import AgentMetrics

    from ..agent.test_metrics import agent

    the_agent = agent()
    the_agent.pools.refusals = authz.MeshRefusals()
    the_agent.pools.refusals.refuse(authz.TOMBSTONE, "forged")
    text = AgentMetrics(the_agent).render().decode()
    found = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("sdmesh_mesh_refusals_total", (("reason", authz.TOMBSTONE),))] == 1
    assert found[("sdmesh_mesh_refusals_total", (("reason", authz.NOT_SHEPHERD),))] == 0


# ------------------------------------------------------------ signed terminations
ALICE = __import__("sdmesh.trust.keys", fromlist=["OperatorKey"]).OperatorKey.generate("alice")


def signing_service(tmp_path: Path) -> Any:
    """``hosting_service`` with a trust store: alice trusted to operate, carol to read."""
    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.store import TrustedOperator, TrustStore
    from sdmesh.trust.termination import termination_refusal

    carol = OperatorKey.generate("carol")
    trusted = TrustStore(
        {
            ALICE.public.key_id: TrustedOperator(ALICE.public, Role.OPERATE),
            carol.public.key_id: TrustedOperator(carol.public, Role.READ),
        }
    )
    svc = hosting_service(tmp_path)
    svc.termination_check = lambda data, pool, gen: termination_refusal(data, pool, gen, trusted)
    svc.reader_key = carol
    return svc


def signed(pool: str, generation: int, key: Any = None) -> bytes:
    from sdmesh.trust.termination import sign_termination

    return sign_termination(key or ALICE, pool, generation, 1000.0)


def tombs_published(svc: Any) -> list[dict[str, Any]]:
    return [msgpack.unpackb(p[2]) for p in svc.node.published if p[0] == "tomb"]


def test_with_a_trust_store_an_unsigned_termination_is_refused_at_every_generation(
    tmp_path: Path,
) -> None:
    """Deny by default: no unsigned allowance, not even up to the newest generation known
    (the host knows generation 3 of web)."""

    async def go() -> None:
        from sdmesh.trust.keys import OperatorKey

        svc = signing_service(tmp_path)
        refused = 0
        for generation in (0, 1, 3, 4):
            svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": generation}))
            reply = await svc.handle_rpc(
                {"rpc": "terminate", "pool": "web", "generation": generation}
            )
            assert reply["ok"] is False and "without a valid operator signature" in reply["error"]
            refused += 2
        svc._on_rumor(rumor("tomb", "web", {"by": "h1"}))  # no generation: the newest known
        refused += 1
        stranger = OperatorKey.generate("mallory")
        for why, signature in [
            ("forged", b"\x01" * 100),
            ("another pool", signed("db", 3)),
            ("a lower generation", signed("web", 2)),
            ("an untrusted key", signed("web", 3, stranger)),
            ("a read-only key", signed("web", 3, svc.reader_key)),
        ]:
            svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 3, "sig": signature}))
            reply = await svc.handle_rpc(
                {"rpc": "terminate", "pool": "web", "generation": 3, "signature": signature}
            )
            assert reply["ok"] is False, why
            refused += 2
        unchanged(svc)
        assert svc.refusals.counts[authz.TOMBSTONE] == refused

    asyncio.run(go())


def test_a_signed_termination_goes_through_with_the_operators_own_signature(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = signing_service(tmp_path)
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 3, "sig": signed("web", 19)}))
        assert svc.tombs["web"].generation == 3
        assert sum(svc.refusals.counts.values()) == 0
        signature = signed("web", 19)
        reply = await svc.handle_rpc(
            {"rpc": "terminate", "pool": "web", "generation": 19, "signature": signature}
        )
        assert reply == {"ok": True}
        assert svc.tombs["web"].generation == 19
        [tomb] = tombs_published(svc)
        assert tomb["gen"] == 19 and tomb["sig"] == signature  # passed on, not re-signed
        huge = {"by": "h1", "gen": 2**64 - 1, "sig": signature}
        svc._on_rumor(rumor("tomb", "web", huge))
        far = {"by": "h1", "gen": 19 + TERMINATE_STEP + 1, "sig": signed("web", 2**31 - 1)}
        svc._on_rumor(rumor("tomb", "web", far))  # signed, but far above what is known
        assert svc.tombs["web"].generation == 19

    asyncio.run(go())


class StubRun:
    """What ``_terminate_here`` reads of a shepherd's core."""

    def __init__(self, generation: int) -> None:
        self.generation = generation


def test_no_laundering_a_host_never_signs_a_termination_for_the_mesh(tmp_path: Path) -> None:
    """Review finding L1: an unsigned terminate RPC to the shepherd used to come out as a
    tombstone signed with the shepherd's api-signing-key. Now it is refused, and a signed
    one goes out with the operator's signature and nothing else."""

    async def go() -> None:
        from sdmesh.agent.pools.state import ShepherdRun

        svc = signing_service(tmp_path)
        fed: list[tuple[str, object]] = []
        svc._feed = lambda pool, event: fed.append((pool, event))
        svc.shepherding["web"] = ShepherdRun(StubRun(5))  # taken over: 3 -> 5
        reply = await svc.handle_rpc({"rpc": "terminate", "pool": "web", "generation": 5})
        assert reply["ok"] is False and not tombs_published(svc) and not fed
        # The operator signed what it knew (3) plus the slack: the takeover is covered.
        from sdmesh.trust.termination import SLACK

        signature = signed("web", 3 + SLACK)
        reply = await svc.handle_rpc(
            {"rpc": "terminate", "pool": "web", "generation": 3 + SLACK, "signature": signature}
        )
        assert reply == {"ok": True}
        [tomb] = tombs_published(svc)
        assert tomb == {"by": "h0", "gen": 3 + SLACK, "sig": signature}
        assert [pool for pool, _ in fed] == ["web"]  # the shepherd ends its run

    asyncio.run(go())


def test_a_signed_termination_below_the_shepherds_generation_does_not_end_its_run(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        from sdmesh.agent.pools.state import ShepherdRun

        svc = signing_service(tmp_path)
        fed: list[str] = []
        svc._feed = lambda pool, event: fed.append(pool)
        svc.shepherding["web"] = ShepherdRun(StubRun(40))
        assert svc._terminate_here("web", 19, signed("web", 19)) is not None  # the 409
        # The signature does not reach generation 40: the run goes on, and nothing is applied
        # or published (a tombstone at 19 would tear down the leaves nothing touched since).
        assert "web" not in svc.tombs and tombs_published(svc) == [] and fed == []
        assert svc._terminate_here("web", 40, signed("web", 40)) is None
        assert fed == ["web"] and svc.tombs["web"].generation == 40

    asyncio.run(go())


def test_the_api_path_publishes_and_forwards_the_signature_it_was_given(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = signing_service(tmp_path)
        shepherd = by_distance("web", NAMES)[0]
        signature = signed("web", 3 + 16)
        assert await svc.termination_floor("web") == 3
        answer = await svc.terminate("web", signature, 3)
        assert answer["state"] == "terminating"
        [tomb] = tombs_published(svc)
        assert tomb["gen"] == 19 and tomb["sig"] == signature
        if shepherd != "h0":
            [request] = svc.client.requests
            assert request == {
                "rpc": "terminate",
                "pool": "web",
                "generation": 19,
                "signature": signature,
            }

    asyncio.run(go())


def test_answers_stay_in_order_when_a_batch_mixes_refused_and_taken_orders(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        ranked = by_distance("web", NAMES)
        bad = Order("web", 4, ranked[-1], "d", "sfConfig:vm", "terminate", "sfConfig:vm")
        good = Order("web", 3, ranked[0], "d", "sfConfig:vm", "start", "sfConfig:vm")
        reply = await svc.handle_rpc(
            {"rpc": "orders", "orders": [bad.to_wire(), good.to_wire(), bad.to_wire()]},
            lambda name: True,
        )
        outcomes = [answer[0] for answer in reply["answers"]]
        assert outcomes[0] == outcomes[2] == "unreachable"
        assert outcomes[1] != "unreachable"
        assert svc.host.inventory("web") == {"sfConfig:vm": 3}
        assert svc.refusals.counts[authz.NOT_SHEPHERD] == 2

    asyncio.run(go())


def test_a_hand_over_from_a_member_not_entitled_to_the_pool_adopts_nothing(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = service(tmp_path, NAMES)
        pool = "web"
        intruder = next(n for n in reversed(by_distance(pool, NAMES)) if n != "h0")
        spec = spec_wire(pool)
        digest = PoolSpec.decode(spec).digest
        record = PoolRecord(pool, digest, 5, intruder, state="running").encode()
        reply = await svc.handle_rpc(
            {"rpc": "handover", "from": intruder, "pools": [{"spec": spec, "record": record}]},
            lambda name: name == intruder,
        )
        assert reply == {"taken": {}}
        assert pool not in svc.shepherding
        assert svc.refusals.counts[authz.NOT_SHEPHERD] == 1

    asyncio.run(go())


# ------------------------------------------------- review findings: no resurrection
def _envelope(age: float) -> bytes:
    import time

    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.signatures import sign_descriptor

    key = OperatorKey.generate("alice")
    return sign_descriptor(key, "web", "d" * 64, Role.OPERATE, time.time() - age).encode()


def test_an_old_signature_does_not_bring_a_terminated_pool_back(tmp_path: Path) -> None:
    """Envelopes never expire and ride every order: one made before the termination must not
    lift the tombstone (a key holder replaying it); one made after may (a resubmission)."""

    async def go() -> None:
        svc = hosting_service(tmp_path)
        shepherd = by_distance("web", NAMES)[0]
        assert (await svc.handle_rpc({"rpc": "terminate", "pool": "web", "generation": 3}))["ok"]
        assert svc.tombs["web"].generation == 3
        old = Order(
            "web", 4, shepherd, "d", "sfConfig:vm", "deploy", "sfConfig:vm", 1, 1, _envelope(3600)
        )
        [answer] = svc.take_orders([old])
        assert answer[0] == "refused" and "was terminated" in str(answer[1])
        assert svc.tombs["web"].generation == 3
        assert svc.refusals.counts[authz.TOMBSTONE] >= 1
        fresh = Order(
            "web", 4, shepherd, "d", "sfConfig:vm", "deploy", "sfConfig:vm", 1, 1, _envelope(0)
        )
        [answer] = svc.take_orders([fresh])
        assert answer[0] != "refused", answer

    asyncio.run(go())


def test_a_submit_rpc_names_a_live_sender_and_cannot_lift_a_tombstone_with_an_old_envelope(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        pool = "web"
        svc = service(tmp_path, NAMES)
        if by_distance(pool, NAMES)[0] != "h0":
            pool = next(
                p for p in (f"web{i}" for i in range(100)) if by_distance(p, NAMES)[0] == "h0"
            )
        svc.tombs[pool] = Tomb(3, __import__("time").monotonic())
        nobody = await svc.handle_rpc(
            {"rpc": "submit", "spec": spec_wire(pool), "generation": 4}, lambda name: False
        )
        assert nobody["ok"] is False and "did not come from it" in nobody["error"]
        replay = await svc.handle_rpc(
            {
                "rpc": "submit",
                "from": "h1",
                "spec": spec_wire(pool),
                "generation": 4,
                "signature": _envelope(3600),
            },
            lambda name: name == "h1",
        )
        assert replay["ok"] is False and "was terminated" in replay["error"]
        assert svc.tombs[pool].generation == 3 and pool not in svc.shepherding

    asyncio.run(go())


def test_a_gossiped_generation_far_above_what_the_host_knows_is_ignored(tmp_path: Path) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        svc._on_rumor(
            rumor("pool", "web", {"digest": "d", "state": "running", "generation": MAX_GENERATION})
        )
        assert svc.known["web"].generation == 3
        assert svc.refusals.counts[authz.GENERATION] == 1

    asyncio.run(go())


def test_an_inventory_with_an_unbounded_generation_is_an_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        svc = hosting_service(tmp_path)
        for bad in (1e400, 2**64, -1, "3"):
            reply = await svc.handle_rpc(
                {"rpc": "inventory", "pool": "web", "host": "h1", "leaves": {"sfConfig:vm": bad}}
            )
            assert isinstance(reply, dict) and "error" in reply, reply

    asyncio.run(go())


def test_the_api_refuses_a_termination_below_what_its_host_knows_before_publishing(
    tmp_path: Path,
) -> None:
    """Signed up to 19, while this host knows the pool at 40 (taken over or moved since):
    a 409 before anything is asked, applied or published (were the shepherd unreachable,
    the tombstone would tear down only the leaves nothing touched since)."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        svc.known["web"] = ap.KnownPool("d", "running", "h1", 0.0, 40)
        with pytest.raises(ap.PoolError) as refused:
            await svc.terminate("web", signed("web", 19), 3)
        assert refused.value.status == 409
        assert "web" not in svc.tombs and tombs_published(svc) == []

    asyncio.run(go())
