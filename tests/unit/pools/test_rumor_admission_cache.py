"""The membership core's rumor check in the pool service (issue 12, item 2, review fixes):
its verdicts are remembered per writer certificate (a renewal counts at once, a revoked
writer is never admitted from memory), refusals only briefly; and a pool rumor from a writer
this host never knew (a shepherd dead before it joined) still leads its successor to take
the pool over, from the record it fully checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sdmesh.agent.pools import following, sealing, trees
from sdmesh.agent.pools.common import KnownPool
from sdmesh.membership import Member
from sdmesh.membership.messages import Rumor
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.ownership import by_distance

from .test_pool_record_seals import DIGEST, _genuine, identified, put
from .test_pool_takeover_tasks import capture_shepherd, ours, until
from .test_record_seal import HOSTS, NAMES, checker


def sealed(body: dict[str, object], writer: str, signer: Any = None, key: str = "web") -> Rumor:
    payload = seal.seal_rumor("pool", key, body, writer, (signer or HOSTS[writer]).prove)
    return Rumor("pool", key, 9, writer, msgpack.packb(payload, use_bin_type=True))


def claims(svc: Any, name: str, identity: Any) -> None:
    """``name``'s membership claims, as verified, carrying ``identity``'s certificate."""
    svc.node.core.m[name] = Member(name, ("127.0.0.1", 1), proof=identity.prove(b"alive"))


DEPLOYING = {"digest": DIGEST, "state": "deploying", "shepherd": "h1", "generation": 2}


def test_a_refusal_is_remembered_briefly_and_a_renewed_certificate_is_checked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        renewed = checker("h1", 500)  # h1's key and certificate after a re-enrolment
        rumor = sealed(DEPLOYING, "h1", signer=renewed)
        assert not svc.admit_rumor(rumor)  # its claims still carry the old certificate
        assert svc.refusals.counts[authz.RUMOR] == 1
        claims(svc, "h1", renewed)  # the re-enrolled member's claims are heard
        assert svc.admit_rumor(rumor)  # checked again at once: another certificate
        stale = sealed(DEPLOYING, "h2", signer=renewed)
        assert not svc.admit_rumor(stale) and not svc.admit_rumor(stale)
        assert svc.refusals.counts[authz.RUMOR] == 2  # a repeat costs a look-up
        monkeypatch.setattr(sealing, "ADMIT_REFUSAL_TTL", 0.0)  # as once its time is past
        late = sealed({**DEPLOYING, "generation": 3}, "h2", signer=renewed)
        assert not svc.admit_rumor(late) and not svc.admit_rumor(late)
        assert svc.refusals.counts[authz.RUMOR] == 4  # checked again, not from memory
        svc.forget_stale_admissions()  # and forgotten
        assert len(svc._admitted) == 2  # h1's admission, the first refusal (in its time)
        await svc.close()

    asyncio.run(go())


def test_a_revoked_writer_is_not_admitted_from_memory(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        rumor = sealed(DEPLOYING, "h1")
        assert svc.admit_rumor(rumor)
        assert len(svc._admitted) == 1
        svc.node.core.m["h1"] = Member("h1", ("127.0.0.1", 1))  # expelled: claims unsigned
        assert not svc.admit_rumor(rumor)
        svc.forget_stale_admissions()
        assert svc._admitted == {}
        await svc.close()

    asyncio.run(go())


def test_a_rumor_republished_by_another_member_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        rumor = sealed(DEPLOYING, "h1")
        assert not svc.admit_rumor(Rumor("pool", "web", 99, "h2", rumor.payload))
        assert svc.refusals.counts[authz.RUMOR] == 1
        assert svc.admit_rumor(rumor)
        await svc.close()

    asyncio.run(go())


def test_a_dead_shepherds_rumor_leads_its_successor_to_take_the_pool_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shepherd A died while its successor (h0 here) restarted: h0 never saw A alive, so it
    knows no certificate of A's and the membership layer refuses A's rumor; without the hint
    nobody would take the pool over."""
    monkeypatch.setattr(following, "TAKEOVER_RETRY_FIRST", 0.2)

    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        cached = trees.TreeCache()
        cached.put(DIGEST, object(), 1)
        monkeypatch.setattr(trees, "_TREES", cached)
        pool = ours(svc)
        record = _genuine(pool)["a dead shepherd's"]
        dead = record.writer
        assert dead not in NAMES and by_distance(pool, [*NAMES[:6], dead])[0] == dead
        body = {"digest": DIGEST, "state": "running", "shepherd": dead, "generation": 4}
        rumor = sealed(body, dead, signer=checker(dead, 77), key=pool)
        assert not svc.admit_rumor(rumor)  # not a member here: neither stored nor trusted
        assert pool not in svc.known and svc._hints[pool].shepherd == dead
        assert sum(svc.refusals.counts.values()) == 0
        put(svc, record)  # the dead shepherd's record: checked as any record is
        svc._apply_view()
        await until(lambda: started != [])
        assert started == [(pool, 5, record)]
        svc._apply_view()  # shepherded here now (captured: as if)
        svc.known[pool] = KnownPool(DIGEST, "deploying", "h0", 0.0, 5)
        svc._apply_view()
        assert pool not in svc._hints  # what this host knows now says more
        await svc.close()

    asyncio.run(go())


def test_a_hint_without_a_record_behind_it_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        stranger = checker("x-unknown", 78)
        body = {"digest": DIGEST, "state": "running", "shepherd": "x-unknown", "generation": 4}
        assert not svc.admit_rumor(sealed(body, "x-unknown", signer=stranger, key=pool))
        assert pool in svc._hints
        await svc._take_over(pool)
        assert started == [] and pool not in svc._hints and pool not in svc._takeover_retry
        for i in range(sealing.MAX_HINTS + 10):  # bounded
            svc._hint(f"q{i}", body)
        assert len(svc._hints) == sealing.MAX_HINTS
        ended = {**body, "state": "terminated", "generation": 5}
        svc._hint("ended", ended)  # only live pools are worth a takeover
        assert "ended" not in svc._hints
        await svc.close()

    asyncio.run(go())


def test_a_known_pool_is_no_hint(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        svc.known["web"] = KnownPool(DIGEST, "running", "h1", 0.0, 3)
        svc._hint("web", {**DEPLOYING, "generation": 9})
        assert svc._hints == {}
        await svc.close()

    asyncio.run(go())
