"""The pool service with host identities (issue 12, item 2): a forged pool record in the DHT
is not taken over from, nor a forged pool or tombstone rumor believed; each is counted, and
the genuine ones (the shepherd's, a dead shepherd's, the submitter's) still go through."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sdmesh.agent import pools as ap
from sdmesh.agent.pools import trees
from sdmesh.membership import Member
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import PoolRecord

from .test_pool_service_ends import rumor, service
from .test_pool_takeover_tasks import capture_shepherd, eligible, fake_dht, ours
from .test_record_seal import HOSTS, NAMES, checker, envelope

DIGEST = "a" * 64


def identified(tmp_path: Path, names: list[str] = NAMES[:6]) -> ap.PoolService:
    """h0 among ``names``, with host identities: members' claims carry their certificate."""
    svc = service(tmp_path, names)
    core: Any = svc.node.core
    for name in names:
        core.m[name] = Member(name, ("127.0.0.1", 1), proof=HOSTS[name].prove(b"alive"))
    svc.prove = HOSTS["h0"].prove
    svc.check_signed = HOSTS["h0"].check_signed
    return svc


def put(svc: ap.PoolService, record: PoolRecord) -> None:
    fake_dht(svc).stored[f"pool/{record.pool}"] = b"\x00" + record.encode()


def signed(record: PoolRecord, writer: str, signer: Any = None) -> PoolRecord:
    return seal.seal_record(record, writer, (signer or HOSTS[writer]).prove)


def running(pool: str, shepherd: str, generation: int = 4) -> PoolRecord:
    return PoolRecord(pool, DIGEST, generation, shepherd, "running", {"sfConfig:vm": "h1"})


def forged_records(pool: str, members: list[str]) -> dict[str, PoolRecord]:
    ranked = by_distance(pool, members)
    near, far = ranked[1], ranked[-1]
    genuine = signed(running(pool, near), near)
    submission = PoolRecord(pool, DIGEST, 4, "h0", signature=envelope(pool, "b" * 64))
    return {
        "unsigned": running(pool, near),
        "wrong writer": signed(running(pool, near), near, signer=HOSTS[far]),
        "writer far from the pool": signed(running(pool, far), far),
        "proof for another record": dataclasses.replace(genuine, generation=9),
        "submission without a valid envelope": signed(submission, far),
    }


@pytest.mark.parametrize("case", list(forged_records("p0", NAMES[:6])))
def test_a_takeover_ignores_a_forged_record_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        pool = ours(svc)
        eligible(svc, pool)
        put(svc, forged_records(pool, NAMES[:6])[case])
        await svc._take_over(pool)
        assert started == [] and pool in svc._takeover_retry  # nothing usable: tried later
        assert svc.refusals.counts[authz.RECORD] == 1
        assert await svc.read_record(pool) is None  # submit's existence check: not there
        assert svc.refusals.counts[authz.RECORD] == 2
        await svc.close()

    asyncio.run(go())


def _genuine(pool: str) -> dict[str, PoolRecord]:
    members = NAMES[:6]
    ranked = by_distance(pool, members)
    # A shepherd that died since: not a member any more, but it was the closest.
    dead = next(
        f"x{i}" for i in range(1000) if by_distance(pool, [*members, f"x{i}"])[0] == f"x{i}"
    )
    submitter = ranked[-1]
    return {
        "the successor's": signed(running(pool, ranked[1]), ranked[1]),
        "a dead shepherd's": signed(running(pool, dead), dead, signer=checker(dead, 77)),
        "the submitter's": signed(
            PoolRecord(pool, DIGEST, 4, "h0", signature=envelope(pool, DIGEST)), submitter
        ),
    }


@pytest.mark.parametrize("case", ["the successor's", "a dead shepherd's", "the submitter's"])
def test_a_takeover_starts_from_a_genuine_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        started = capture_shepherd(svc, monkeypatch)
        cached = trees.TreeCache()
        cached.put(DIGEST, object(), 1)
        monkeypatch.setattr(trees, "_TREES", cached)
        pool = ours(svc)
        eligible(svc, pool)
        record = _genuine(pool)[case]
        put(svc, record)
        await svc._take_over(pool)
        assert started == [(pool, 5, record)]
        assert sum(svc.refusals.counts.values()) == 0
        await svc.close()

    asyncio.run(go())


def test_records_this_agent_writes_are_proven_and_taken_by_its_peers(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        assert await svc.write_record(running(pool, "h0"))
        stored = PoolRecord.decode(fake_dht(svc).stored[f"pool/{pool}"][1:])
        assert stored.writer == "h0" and stored.proof
        local = PoolRecord.decode((tmp_path / "specs" / f"{pool}.record").read_bytes())
        assert local == stored
        peer = identified(tmp_path / "peer")
        peer.check_signed = HOSTS["h1"].check_signed
        put(peer, stored)
        assert await peer.lookup_record(pool) == (True, stored)
        assert sum(peer.refusals.counts.values()) == 0
        await svc.close()
        await peer.close()

    asyncio.run(go())


def test_without_identities_records_are_neither_sealed_nor_checked(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path, NAMES[:6])
        pool = ours(svc)
        assert await svc.write_record(running(pool, "h0"))
        stored = PoolRecord.decode(fake_dht(svc).stored[f"pool/{pool}"][1:])
        assert (stored.writer, stored.proof) == ("", b"")
        put(svc, running(pool, by_distance(pool, NAMES[:6])[-1]))  # anyone's: trusted
        assert (await svc.lookup_record(pool))[1] is not None
        assert sum(svc.refusals.counts.values()) == 0
        await svc.close()

    asyncio.run(go())


# ------------------------------------------------------------------------ rumors
def sealed_rumor(topic: str, key: str, body: dict[str, object], writer: str) -> Any:
    return rumor(topic, key, seal.seal_rumor(topic, key, body, writer, HOSTS[writer].prove), writer)


def test_unsigned_or_forged_rumors_are_ignored_and_counted(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        pool_body = {"digest": DIGEST, "state": "running", "shepherd": "h1", "generation": 3}
        svc._on_rumor(rumor("pool", "web", pool_body))
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 3}))
        forged = seal.seal_rumor("tomb", "web", {"by": "h1", "gen": 3}, "h1", HOSTS["h1"].prove)
        svc._on_rumor(rumor("tomb", "web", {**forged, "gen": 40}))
        as_other = seal.seal_rumor("tomb", "web", {"by": "h2", "gen": 3}, "h1", HOSTS["h1"].prove)
        svc._on_rumor(rumor("tomb", "web", as_other))
        assert "web" not in svc.known and "web" not in svc.tombs
        assert svc.refusals.counts[authz.RUMOR] == 1
        assert svc.refusals.counts[authz.TOMBSTONE] == 3
        ranked = by_distance("web", NAMES[:6])
        far, near = ranked[-1], ranked[0]
        running_body = {**pool_body, "shepherd": far}
        svc._on_rumor(sealed_rumor("pool", "web", running_body, far))  # not its shepherd
        svc._on_rumor(sealed_rumor("pool", "web", pool_body, far))  # names another
        assert "web" not in svc.known
        assert svc.refusals.counts[authz.RUMOR] == 3
        submitted = {**pool_body, "state": "deploying", "generation": 2}
        svc._on_rumor(sealed_rumor("pool", "web", submitted, far))  # a submitter's: taken
        assert svc.known["web"].generation == 2
        svc._on_rumor(sealed_rumor("pool", "web", {**pool_body, "shepherd": near}, near))
        assert svc.known["web"].generation == 3 and svc.known["web"].state == "running"
        svc._on_rumor(sealed_rumor("tomb", "web", {"by": "h1", "gen": 3}, "h1"))
        assert svc.tombs["web"].generation == 3
        await svc.close()

    asyncio.run(go())


def test_what_this_agent_publishes_is_sealed_and_taken_back(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        svc._publish("tomb", "web", svc.tomb_body("web", 5))
        topic, key, payload = svc.node.published[-1]
        body = msgpack.unpackb(payload)
        assert body["writer"] == "h0" and len(body["proof"]) == 64
        svc._on_rumor(rumor(topic, key, body, "h0"))
        assert svc.tombs["web"].generation == 5
        assert sum(svc.refusals.counts.values()) == 0
        await svc.close()

    asyncio.run(go())


def test_a_rumor_from_a_writer_not_known_yet_is_heard_once_it_is(tmp_path: Path) -> None:
    async def go() -> None:
        svc = identified(tmp_path)
        newcomer = NAMES[7]
        body = {"digest": DIGEST, "state": "deploying", "shepherd": "h1", "generation": 2}
        svc._on_rumor(sealed_rumor("pool", "web", body, newcomer))
        assert "web" not in svc.known and sum(svc.refusals.counts.values()) == 0
        svc.retry_parked()  # still unknown: kept aside
        assert "web" not in svc.known
        core: Any = svc.node.core
        core.m[newcomer] = Member(newcomer, ("127.0.0.1", 1), proof=HOSTS[newcomer].prove(b"x"))
        svc.retry_parked()
        assert svc.known["web"].generation == 2 and svc._parked == {}
        await svc.close()

    asyncio.run(go())


def test_the_new_refusal_reasons_are_stable_metric_labels() -> None:
    labels = dict(authz.MeshRefusals().samples())
    assert labels[authz.RECORD] == 0 and labels[authz.RUMOR] == 0
    assert authz.REASONS[:5] == (
        "generation",
        "order_not_from_shepherd",
        "wrong_sender",
        "submit_not_shepherd",
        "tombstone",
    )


def test_records_of_shepherded_pools_are_sealed_again_under_the_current_certificate(
    tmp_path: Path,
) -> None:
    """A pool that runs unchanged keeps its record; it is stored again every announce period
    so its proof never rests on a certificate that has expired since."""
    from collections import defaultdict
    from types import SimpleNamespace

    async def go() -> None:
        svc = identified(tmp_path)
        pool = ours(svc)
        current = running(pool, "h0")
        core = SimpleNamespace(paused=False, announcement=lambda: object(), record=lambda: current)
        run: Any = SimpleNamespace(core=core, save=None, flushing=None, orders=defaultdict(list))
        svc.shepherding[pool] = run
        svc.reseal_records()
        await run.flushing
        stored = PoolRecord.decode(fake_dht(svc).stored[f"pool/{pool}"][1:])
        assert dataclasses.replace(stored, writer="", proof=b"") == current
        assert seal.record_refusal(stored, NAMES[:6], HOSTS["h1"].check_signed) is None
        fake_dht(svc).stored.clear()
        core.announcement = lambda: None  # ended or handed over: not stored again
        svc.reseal_records()
        assert run.flushing.done() and fake_dht(svc).stored == {}
        svc.prove = None  # without identities nothing is written again
        core.announcement = lambda: object()
        svc.reseal_records()
        assert fake_dht(svc).stored == {}
        svc.shepherding.clear()
        await svc.close()

    asyncio.run(go())


def test_the_identity_checker_admits_only_rumors_the_pool_service_takes(tmp_path: Path) -> None:
    """Forged pool and tombstone rumors are neither stored nor forwarded (so none displaces a
    genuine one); a writer not known yet is refused quietly, and admitted once it is known."""
    from sdmesh.membership.messages import Rumor

    async def go() -> None:
        svc = identified(tmp_path)
        identity = HOSTS["h0"]
        identity.rumor_checks["tomb"] = identity.rumor_checks["pool"] = svc.admit_rumor
        try:
            body = {"by": "h1", "gen": 3}
            genuine = seal.seal_rumor("tomb", "web", body, "h1", HOSTS["h1"].prove)
            forged = {**genuine, "gen": 2**31 - 1}

            def as_rumor(topic: str, payload: dict[str, object]) -> Rumor:
                origin = str(payload["writer"])
                return Rumor(topic, "web", 9, origin, msgpack.packb(payload, use_bin_type=True))

            assert identity.admit_rumor(as_rumor("tomb", genuine))
            for _ in range(5):  # gossip repeats it: counted once
                assert not identity.admit_rumor(as_rumor("tomb", forged))
            assert not identity.admit_rumor(Rumor("pool", "web", 9, "h1", b"\xc1"))
            assert svc.refusals.counts[authz.TOMBSTONE] == 1
            assert svc.refusals.counts[authz.RUMOR] == 1
            assert identity.admit_rumor(Rumor("other", "web", 9, "h1", b"anything"))
            newcomer = NAMES[7]
            pool_body = {"digest": DIGEST, "state": "deploying", "shepherd": "h1", "generation": 2}
            early = seal.seal_rumor("pool", "web", pool_body, newcomer, HOSTS[newcomer].prove)
            assert not identity.admit_rumor(as_rumor("pool", early))
            assert svc.refusals.counts[authz.RUMOR] == 1  # not a forgery: not counted
            core: Any = svc.node.core
            core.m[newcomer] = Member(newcomer, ("127.0.0.1", 1), proof=HOSTS[newcomer].prove(b"x"))
            assert identity.admit_rumor(as_rumor("pool", early))  # push-pull offers it again
            svc.check_signed = None  # without identities: everything
            assert svc.admit_rumor(as_rumor("tomb", forged))
        finally:
            identity.rumor_checks.clear()
        await svc.close()

    asyncio.run(go())


def test_a_tombstone_from_a_writer_not_known_here_counts_if_an_operator_signed_it(
    tmp_path: Path,
) -> None:
    """The writer of a tombstone may have died before this agent saw it alive (its
    certificate is then never known here): the operator's termination signature, which is
    what ends a pool, is enough. Without one, the tombstone waits for its writer."""
    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.store import TrustedOperator, TrustStore
    from sdmesh.trust.termination import sign_termination, termination_refusal

    alice = OperatorKey.generate("alice")
    trusted = TrustStore({alice.public.key_id: TrustedOperator(alice.public, Role.OPERATE)})

    async def go() -> None:
        svc = identified(tmp_path)
        svc.termination_check = lambda data, pool, gen: termination_refusal(
            data, pool, gen, trusted
        )
        gone = NAMES[7]  # never seen alive here
        unsigned = sealed_rumor("tomb", "web", {"by": gone, "gen": 3}, gone)
        assert not svc.admit_rumor(unsigned)
        svc._on_rumor(unsigned)
        assert "web" not in svc.tombs
        signature = sign_termination(alice, "web", 3, 1000.0)
        operator = sealed_rumor("tomb", "web", {"by": gone, "gen": 3, "sig": signature}, gone)
        assert svc.admit_rumor(operator)
        svc._on_rumor(operator)
        assert svc.tombs["web"].generation == 3
        older = sign_termination(alice, "web", 2, 900.0)  # an earlier pool's, replayed
        replay = sealed_rumor("tomb", "web", {"by": gone, "gen": 2, "sig": older}, gone)
        assert not svc.admit_rumor(replay)  # it must not displace the newer one anywhere
        await svc.close()

    asyncio.run(go())


def test_a_renewed_certificate_seals_records_and_rumors_again(tmp_path: Path) -> None:
    """After a SIGHUP picked up a new certificate, the pools shepherded here are stored and
    announced again under it (a rumor under the old one would be refused as a forgery)."""
    called: list[str] = []

    async def go() -> None:
        svc = identified(tmp_path)
        svc.reseal_records = lambda: called.append("records")  # type: ignore[method-assign]
        svc.announce = lambda: called.append("rumors")  # type: ignore[method-assign]
        svc.certificate_renewed()
        assert called == ["records", "rumors"]
        await svc.close()

    asyncio.run(go())
