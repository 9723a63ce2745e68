"""Replayed pool rumors (issue 12, item 2, review fixes): a rumor's signature covers neither
its Lamport time nor its origin, so anyone holding the cluster key can republish an old
genuine rumor with a fresh Lamport time. It is refused when its origin is not its writer
(identities on), and the pool layer ignores a rumor older than what it knows (lower
generation, or an earlier state in the same generation), with identities or without."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdmesh.agent.pools.common import KnownPool
from sdmesh.agent.pools.rumors import rumor_is_older
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.ownership import by_distance

from .test_pool_record_seals import DIGEST, identified
from .test_pool_service_ends import rumor, service
from .test_record_seal import HOSTS, NAMES, READER, certificate_of

READER_CHECK = READER.check_signed


def known(state: str, generation: int) -> KnownPool:
    return KnownPool(DIGEST, state, "h1", 0.0, generation)


def test_the_order_of_pool_rumors() -> None:
    assert rumor_is_older(known("running", 3), known("deploying", 4))
    assert not rumor_is_older(known("deploying", 5), known("terminated", 4))  # resubmission
    order = ["deploying", "running", "terminating", "terminated"]
    for i, earlier in enumerate(order):
        for later in order[i + 1 :]:
            assert rumor_is_older(known(earlier, 4), known(later, 4))
            assert not rumor_is_older(known(later, 4), known(earlier, 4))
        assert not rumor_is_older(known(earlier, 4), known(earlier, 4))  # announced again
    assert rumor_is_older(known("running", 4), known("failed", 4))
    assert not rumor_is_older(known("failed", 4), known("terminated", 4))


def test_a_rumor_published_by_another_member_than_its_writer_is_refused() -> None:
    body = seal.seal_rumor("pool", "web", {"state": "running"}, "h1", HOSTS["h1"].prove)
    ok = seal.rumor_refusal("pool", "web", body, READER_CHECK, certificate_of, origin="h1")
    assert ok is None
    replayed = seal.rumor_refusal("pool", "web", body, READER_CHECK, certificate_of, origin="h5")
    assert replayed is not None and replayed[0] == "refused"
    assert "published by another member" in replayed[1]


@pytest.mark.parametrize("identities", [False, True])
def test_a_replayed_running_rumor_does_not_bring_a_terminated_pool_back(
    tmp_path: Path, identities: bool
) -> None:
    async def go() -> None:
        svc = identified(tmp_path) if identities else service(tmp_path, NAMES[:6])
        shepherd = by_distance("web", NAMES[:6])[0]

        def said(state: str, generation: int, origin: str = shepherd) -> object:
            body: dict[str, object] = {
                "digest": DIGEST,
                "state": state,
                "shepherd": shepherd,
                "generation": generation,
            }
            if identities:
                body = seal.seal_rumor("pool", "web", body, shepherd, HOSTS[shepherd].prove)
            return rumor("pool", "web", body, origin)

        old_running = said("running", 4)
        svc._on_rumor(old_running)
        svc._on_rumor(said("terminating", 4))
        svc._on_rumor(said("terminated", 4))
        svc._on_rumor(old_running)  # republished with a fresh Lamport time
        svc._on_rumor(said("deploying", 3))
        assert (svc.known["web"].state, svc.known["web"].generation) == ("terminated", 4)
        if identities:  # by anyone but its writer: refused outright, and counted
            svc._on_rumor(said("running", 4, origin="h5" if shepherd != "h5" else "h4"))
            assert svc.refusals.counts[authz.RUMOR] == 1
        svc._on_rumor(said("deploying", 5))  # submitted again: a new generation wins
        assert (svc.known["web"].state, svc.known["web"].generation) == ("deploying", 5)
        await svc.close()

    asyncio.run(go())
