"""Submission records (issue 12, item 2, review fixes): any member may write one with a
pool's public operator envelope, so one is taken only while the envelope is recent, never
supersedes a shepherd running the pool, revives a terminated pool only with an envelope
signed after the termination; and only the shepherd's own rumor lifts a tombstone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdmesh.agent.pools import trees
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import PoolRecord, Tomb
from sdmesh.pools.shepherd import Shepherd
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import sign_descriptor

from .test_pool_record_seals import DIGEST, identified, put, running, sealed_rumor, signed
from .test_pool_takeover_tasks import capture_shepherd, eligible, ours
from .test_record_seal import HOSTS, NAMES, NOW, OPERATOR, RANKED, READER, envelope


def envelope_at(pool: str, signed_at: float) -> bytes:
    return sign_descriptor(OPERATOR, pool, DIGEST, Role.OPERATE, signed_at).encode()


def submission(pool: str, generation: int, signature: bytes, shepherd: str = "h0") -> PoolRecord:
    return PoolRecord(pool, DIGEST, generation, shepherd, signature=signature)


# ------------------------------------------------------------------ the pure rules
def test_a_submission_record_is_taken_only_while_its_envelope_is_recent() -> None:
    record = seal.seal_record(
        PoolRecord("web", DIGEST, 3, RANKED[0], signature=envelope()),
        RANKED[-1],
        HOSTS[RANKED[-1]].prove,
    )

    def refusal(now: float | None) -> str | None:
        return seal.record_refusal(record, NAMES, READER.check_signed, now=now)

    assert refusal(None) is None
    assert refusal(NOW + 60) is None
    assert refusal(NOW + seal.SUBMISSION_RECORD_TTL) is None
    late = refusal(NOW + seal.SUBMISSION_RECORD_TTL + 1)
    assert late is not None and "over 3600 s old" in late
    assert seal.SUBMISSION_RECORD_TTL == 3600.0
    # The shepherd's own record is not a submission record: its envelope's age is no matter.
    own = seal.seal_record(
        PoolRecord("web", DIGEST, 3, RANKED[0], "running", {"u": "h1"}, signature=envelope()),
        RANKED[0],
        HOSTS[RANKED[0]].prove,
    )
    assert seal.record_refusal(own, NAMES, READER.check_signed, now=NOW + 10**6) is None


def test_a_foreign_submission_record_never_supersedes_a_running_shepherd() -> None:
    foreign = PoolRecord("web", DIGEST, 9, "h0", signature=envelope(), writer="h5", proof=b"p")
    assert seal.is_foreign_submission(foreign)
    assert not seal.supersedes(foreign, 4)
    takeover = PoolRecord("web", DIGEST, 9, "h1", "running", {"u": "h2"}, writer="h1")
    assert seal.supersedes(takeover, 4) and not seal.supersedes(takeover, 9)
    # The shepherd's own submission-shaped record, and any record without identities, do.
    assert seal.supersedes(PoolRecord("web", DIGEST, 9, "h0", writer="h0"), 4)
    assert seal.supersedes(PoolRecord("web", DIGEST, 9, "h0"), 4)
    core: Any = SimpleNamespace(generation=4)
    assert not Shepherd.superseded_by(core, foreign)
    assert Shepherd.superseded_by(core, takeover)


# ------------------------------------------------------------------ the pool service
def test_resume_goes_on_when_a_member_wrote_a_submission_record_above_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member replaying the pool's envelope in a nothing-placed record at a higher
    generation (naming the real shepherd) must not make the shepherd drop its core and take
    the pool over from nothing placed (which would destroy and rebuild every VM)."""

    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        writer = by_distance(pool, NAMES[:6])[-1]
        forged = signed(submission(pool, 40, envelope_at(pool, time.time())), writer)
        put(svc, forged)
        assert svc.record_taken(forged)  # a submission record: taken on its own
        fed: list[Any] = []
        core: Any = SimpleNamespace(paused=True, generation=4)
        core.superseded_by = lambda stored: Shepherd.superseded_by(core, stored)
        core.handle = lambda event, now: fed.append(type(event).__name__) or []
        run: Any = SimpleNamespace(core=core, resuming=True, save=None, orders={}, timers={})
        run.flushing = None
        svc.shepherding[pool] = run
        takeovers: list[str] = []
        monkeypatch.setattr(svc, "_start_take_over", takeovers.append)
        await svc._resume(pool, run)
        assert svc.shepherding.get(pool) is run and takeovers == [] and fed == ["Resume"]
        # A record its successor wrote at a higher generation does supersede it.
        successor = by_distance(pool, NAMES[:6])[1]
        put(svc, signed(running(pool, successor, 40), successor))
        run.resuming = True
        await svc._resume(pool, run)
        assert pool not in svc.shepherding and takeovers == [pool]
        await svc.close()

    asyncio.run(go())


def test_replicas_never_replace_a_live_pools_record_with_a_submission_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the envelope's hour, a member's submission record at a higher DHT version
    must not replace the shepherd's live record on the replicas (what a takeover reads)."""

    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        writer = by_distance(pool, NAMES[:6])[-1]
        forged = signed(submission(pool, 40, envelope_at(pool, time.time())), writer)
        held: list[PoolRecord] = []
        monkeypatch.setattr(
            svc.dht,
            "local_record",
            lambda key: SimpleNamespace(value=b"\x00" + held[0].encode()) if held else None,
        )
        assert svc.record_kept(forged)  # nothing held: a new pool's submission
        for state in ("terminated", "failed"):  # an ended pool's name, submitted again
            held[:] = [signed(PoolRecord(pool, DIGEST, 5, "h0", state), "h0")]
            assert svc.record_kept(forged)
        held[:] = [signed(submission(pool, 39, envelope_at(pool, time.time())), writer)]
        assert svc.record_kept(forged)  # one submission record above another
        for live in (running(pool, "h0", 5), PoolRecord(pool, DIGEST, 5, "h0")):
            held[:] = [signed(live, "h0")]
            assert not svc.record_kept(forged)
        assert svc.refusals.counts[authz.RECORD] == 2
        assert svc.record_kept(signed(running(pool, "h0", 40), "h0"))  # its shepherd's own
        svc.check_signed = None  # without identities: as before
        assert svc.record_kept(forged)
        await svc.close()

    asyncio.run(go())


def test_an_old_envelope_in_a_submission_record_is_refused_by_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        writer = by_distance(pool, NAMES[:6])[-1]
        old = signed(submission(pool, 40, envelope_at(pool, NOW)), writer)
        monkeypatch.setattr(svc, "wall_clock", lambda: NOW + 2 * 3600)
        assert not svc.record_taken(old)
        assert svc.refusals.counts[authz.RECORD] == 1
        monkeypatch.setattr(svc, "wall_clock", lambda: NOW + 600)
        assert svc.record_taken(old)
        await svc.close()

    asyncio.run(go())


@pytest.mark.parametrize("fresh", [False, True])
def test_a_takeover_above_a_tombstone_needs_an_envelope_signed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: bool
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        eligible(svc, pool)
        svc.tombs[pool] = Tomb(3, time.monotonic())
        signed_at = time.time() + 1 if fresh else time.time() - 600  # within the hour
        writer = by_distance(pool, NAMES[:6])[-1]
        record = signed(submission(pool, 4, envelope_at(pool, signed_at)), writer)
        put(svc, record)
        cached = trees.TreeCache()
        cached.put(DIGEST, object(), 1)
        monkeypatch.setattr(trees, "_TREES", cached)
        await svc._take_over(pool)
        if fresh:
            assert started == [(pool, 5, record)] and pool not in svc.tombs
        else:
            assert started == [] and pool in svc._takeover_retry and pool in svc.tombs
            assert svc.refusals.counts[authz.TOMBSTONE] == 1
        await svc.close()

    asyncio.run(go())


def test_a_takeover_ignores_a_record_the_tombstone_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        eligible(svc, pool)
        svc.tombs[pool] = Tomb(4, time.monotonic())
        successor = by_distance(pool, NAMES[:6])[1]
        put(svc, signed(running(pool, successor, 4), successor))
        await svc._take_over(pool)
        assert started == [] and pool not in svc._takeover_retry
        await svc.close()

    asyncio.run(go())


def test_only_the_shepherds_rumor_lifts_a_tombstone_with_identities(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        ranked = by_distance("web", NAMES[:6])
        near, far = ranked[0], ranked[-1]
        svc.tombs["web"] = Tomb(3, time.monotonic())
        body = {"digest": DIGEST, "state": "deploying", "shepherd": near, "generation": 4}
        svc._on_rumor(sealed_rumor("pool", "web", body, far))  # anyone may say "deploying"
        assert svc.known["web"].generation == 4 and "web" in svc.tombs  # but not lift it
        svc._on_rumor(sealed_rumor("pool", "web", body, near))  # the shepherd's own
        assert "web" not in svc.tombs
        await svc.close()

    asyncio.run(go())


def test_a_shepherd_announces_the_pool_when_it_starts_with_identities(tmp_path: Path) -> None:
    """So the tombstone of a resubmitted name is lifted on every host by the one rumor that
    may lift it (the submitter's "deploying" does not)."""
    import msgpack

    from sdmesh.pools.submission import build_spec

    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        spec = build_spec({"descriptor": "sfConfig extends { }", "name": pool})
        reply = await svc.handle_rpc({"rpc": "submit", "spec": spec.encode(), "generation": 4})
        assert reply == {"ok": True} and pool in svc.shepherding
        said = [msgpack.unpackb(p) for t, k, p in svc.node.published if (t, k) == ("pool", pool)]
        assert said and said[0]["writer"] == "h0" and said[0]["shepherd"] == "h0"
        assert (said[0]["state"], said[0]["generation"]) == ("deploying", 4)
        svc._stop_shepherding(pool)
        await svc.close()

    asyncio.run(go())


def test_a_save_is_not_dropped_as_moot_for_a_members_submission_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdmesh.agent.pools import store

    from .test_pool_takeover_tasks import fake_dht, until

    monkeypatch.setattr(store, "retry_delay", lambda attempt: 0.01)

    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        writer = by_distance(pool, NAMES[:6])[-1]
        fake_dht(svc).replicas = 0  # every replica holds a newer version
        assert not await svc.write_record(running(pool, "h0", 5))
        put(svc, signed(submission(pool, 40, envelope_at(pool, time.time())), writer))
        await asyncio.sleep(0.1)
        assert pool in svc._unsaved  # not moot: nobody took the pool over
        successor = by_distance(pool, NAMES[:6])[1]
        put(svc, signed(running(pool, successor, 40), successor))
        await until(lambda: pool not in svc._unsaved)  # a successor's record: moot now
        await svc.close()

    asyncio.run(go())
