"""Terminations through the pool service, after a cold review of the signed terminations
(issue 12, item 2): the agent's own apply path refuses what its host would refuse from the
mesh, a shepherd's refusal reaches the caller, and an ended pool's record covers the
tombstone that ended it, so a resubmission starts above it and a replayed tombstone ends
nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sdmesh.agent.pools import PoolError
from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.language import resolve_text
from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import PoolRecord, PoolSpec
from sdmesh.pools.submission import build_spec
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.termination import SLACK

from .test_pool_authz import NAMES, StubRun, signed, signing_service, tombs_published
from .test_pool_cores import pool_text
from .test_pool_service_ends import FakeClient, rumor

MALLORY = OperatorKey.generate("mallory")


def remote_pool(svc: Any) -> str:
    """A pool another member shepherds, known here at generation 3."""
    pool = next(p for p in (f"web{i}" for i in range(100)) if by_distance(p, NAMES)[0] != "h0")
    svc._on_rumor(rumor("pool", pool, {"digest": "d", "state": "running", "generation": 3}))
    return pool


def a_spec(pool: str) -> PoolSpec:
    return build_spec({"name": pool, "descriptor": resolve_text(pool_text(1)).to_sf()})


def client(svc: Any) -> FakeClient:
    assert isinstance(svc.client, FakeClient)
    return svc.client


# ------------------------------------------------------------- the local apply path
def test_the_api_path_refuses_what_this_host_refuses_from_the_mesh(tmp_path: Path) -> None:
    """The pool service checks the signature again before it applies or publishes anything
    (the trust store may have changed since the API's check: a key revoked meanwhile)."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        for why, signature in [
            ("unsigned", b""),
            ("an untrusted key", signed("web", 3 + SLACK, MALLORY)),
            ("a read-only key", signed("web", 3 + SLACK, svc.reader_key)),
            ("another pool", signed("db", 3 + SLACK)),
        ]:
            with pytest.raises(PoolError) as refused:
                await svc.terminate("web", signature, 3)
            assert refused.value.status == 403, why
        assert "web" not in svc.tombs and not tombs_published(svc)
        assert not client(svc).requests  # the shepherd was not even asked
        assert svc.refusals.counts["tombstone"] == 4

    asyncio.run(go())


# ------------------------------------------------------------ the shepherd's answer
def test_a_shepherds_refusal_is_the_callers_403_and_publishes_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        svc = signing_service(tmp_path)
        pool = remote_pool(svc)
        shepherd = by_distance(pool, NAMES)[0]
        signature = signed(pool, 3 + SLACK)
        client(svc).replies = [{"ok": False, "error": f"pool {pool}: key abc is not trusted"}]
        with pytest.raises(PoolError) as refused:
            await svc.terminate(pool, signature, 3)
        assert refused.value.status == 403
        assert str(refused.value) == (
            f"pool {pool}: its shepherd {shepherd} refused: pool {pool}: key abc is not trusted"
        )
        assert pool not in svc.tombs and not tombs_published(svc)
        # What a member sends is not echoed as is: no control characters, bounded.
        for junk, shown in [("a\nb\x1b[2J", "no reason given"), ("x" * 5000, "x" * 300 + "...")]:
            client(svc).replies = [{"ok": False, "error": junk}]
            with pytest.raises(PoolError) as refused:
                await svc.terminate(pool, signature, 3)
            assert str(refused.value).endswith(f"refused: {shown}")

    asyncio.run(go())


def test_a_shepherd_above_the_signed_generation_is_a_409(tmp_path: Path) -> None:
    """Over the RPC and on the shepherd itself: nothing is ended, the caller signs again."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        svc._feed = lambda pool, event: None
        svc.shepherding["web"] = ShepherdRun(StubRun(40))  # 3 + SLACK does not reach 40
        reply = await svc.handle_rpc(
            {"rpc": "terminate", "pool": "web", "generation": 19, "signature": signed("web", 19)}
        )
        assert reply["ok"] is False and reply["conflict"] is True
        assert "runs generation 40, above the 19" in reply["error"]
        with pytest.raises(PoolError) as conflict:
            await svc.terminate("web", signed("web", 19), 3)
        assert conflict.value.status == 409
        pool = remote_pool(svc)
        client(svc).replies = [{"ok": False, "error": "runs generation 40", "conflict": True}]
        with pytest.raises(PoolError) as conflict:
            await svc.terminate(pool, signed(pool, 19), 3)
        assert conflict.value.status == 409

    asyncio.run(go())


def test_an_unreachable_shepherd_is_a_202_that_says_so(tmp_path: Path) -> None:
    """The tombstone still travels as gossip; the answer says the shepherd was not told."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        pool = remote_pool(svc)
        shepherd = by_distance(pool, NAMES)[0]
        for reply in (OSError("connection refused"), {"error": "unknown request"}):
            client(svc).replies = [reply]
            answer = await svc.terminate(pool, signed(pool, 3 + SLACK), 3)
            assert answer["state"] == "terminating"
            assert f"its shepherd {shepherd} did not answer" in str(answer["detail"])
        assert svc.tombs[pool].generation == 3 + SLACK
        answer = await svc.terminate(pool, signed(pool, 3 + SLACK), 3)  # {"ok": True}
        assert "detail" not in answer

    asyncio.run(go())


# ----------------------------------------------------- no replay after the slack
def test_an_ended_pools_record_covers_its_tombstone(tmp_path: Path) -> None:
    """The shepherd saves the ended pool's record at the tombstone's generation (n + SLACK),
    not the run's (n); a live record keeps the run's."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        run = ShepherdRun(StubRun(3))  # type: ignore[arg-type]
        svc._heard_tomb("web", 3 + SLACK)
        states = [("running", 3), ("terminating", 3), ("terminated", 19), ("failed", 19)]
        for state, saved in states:
            record = PoolRecord("web", "d" * 64, 3, "h0", state)
            svc._shepherd_action("web", run, sc.SaveRecord(record))
            assert run.save is not None and run.save.generation == saved, state
            assert run.save.state == state
        svc.tombs.clear()  # none: the record stays as it is
        record = PoolRecord("web", "d" * 64, 3, "h0", "failed")
        svc._shepherd_action("web", run, sc.SaveRecord(record))
        assert run.save is not None and run.save.generation == 3

    asyncio.run(go())


def test_a_resubmission_starts_above_the_forgotten_tombstone_and_a_replay_ends_nothing(
    tmp_path: Path,
) -> None:
    """Terminated at G = 3 + SLACK; every agent forgot the tombstone (pruned after a day, or
    restarted); the name is submitted again: it starts above G, and the old (public)
    signature replayed as a tombstone changes nothing, here or at the new shepherd."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        pool = remote_pool(svc)
        G = 3 + SLACK
        tomb = signed(pool, G)
        await svc.terminate(pool, tomb, 3)
        run = ShepherdRun(StubRun(3))  # type: ignore[arg-type]
        svc._shepherd_action(
            pool, run, sc.SaveRecord(PoolRecord(pool, "d" * 64, 3, "h1", "terminated"))
        )
        assert run.save is not None
        await svc.write_record(run.save)  # what the shepherd leaves in the DHT
        svc.known[pool] = svc.known[pool].__class__("d", "terminated", "h1", 0.0, 3)
        assert svc.prune(time.monotonic() + 10**6) == [pool]  # every trace forgotten
        client(svc).requests.clear()
        spec = a_spec(pool)
        await svc.submit(spec, signed(pool, 0))
        [order] = [r for r in client(svc).requests if r["rpc"] == "submit"]
        assert order["generation"] == G + 1
        assert svc.known[pool].generation == G + 1
        # The old tombstone, replayed: refused by no check (it is a real signature), applied
        # to nothing.
        svc._on_rumor(rumor("tomb", pool, {"by": "h1", "gen": G, "sig": tomb}))
        assert pool not in svc.tombs
        assert svc.known[pool].state == "deploying"

    asyncio.run(go())


def test_a_replayed_tombstone_below_a_new_pool_ends_nothing_at_its_shepherd(
    tmp_path: Path,
) -> None:
    """A shepherd that never heard of the resubmission's rumor (restarted) keeps the replayed
    tombstone, but neither its run above it nor the host's leaves at the new generation
    end."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        G = 3 + SLACK
        fed: list[object] = []
        svc._feed = lambda pool, event: fed.append(event)
        svc.known.clear()
        svc.host.handle(hc.Recovered("new", "sfConfig:vm", "sfConfig:vm", G + 1, "h0", 1, 256))
        svc.shepherding["new"] = ShepherdRun(StubRun(G + 1))
        svc._on_rumor(rumor("tomb", "new", {"by": "h1", "gen": G, "sig": signed("new", G)}))
        assert svc.tombs["new"].generation == G  # nothing here says it is older
        assert fed == []  # the run at G + 1 is not ended
        svc._host_feed(hc.PoolTerminated("new", G))  # the tear-down, after the grace
        assert svc.host.inventory("new") == {"sfConfig:vm": G + 1}

    asyncio.run(go())


def test_a_new_pool_is_ended_at_once_only_by_a_tombstone_that_covers_it(tmp_path: Path) -> None:
    """``_shepherd`` ends a pool it starts when a tombstone is known: for a submission (no
    record taken over), only one that covers its generation."""

    async def go() -> None:
        svc = signing_service(tmp_path)
        spec = a_spec("web")
        ended: list[str] = []
        feed = svc._feed

        def watch(pool: str, event: object) -> None:
            if isinstance(event, sc.TerminateRequested):
                ended.append(pool)
            feed(pool, event)

        svc._feed = watch
        svc._heard_tomb("web", 19)
        await svc._shepherd(spec, 20, None)
        assert ended == []
        svc._stop_shepherding("web")
        await svc._shepherd(spec, 19, None)
        assert ended == ["web"]
        await svc.close()

    asyncio.run(go())
