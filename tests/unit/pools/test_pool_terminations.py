"""Terminations through the pool service, after a cold review of the signed terminations
(issue 12, item 2): the agent's own apply path refuses what its host would refuse from the
mesh, a shepherd's refusal reaches the caller, and an ended pool's record covers the
tombstone that ended it, so a resubmission starts above it and a replayed tombstone ends
nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sdmesh.agent.pools import PoolError
from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.language import resolve_text
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import PoolSpec
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
