"""The pool service's driver around how pools end, with fake mesh, DHT and transport."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from sdmesh.agent import pools as ap
from sdmesh.agent.pools import reports, rumors, state, store
from sdmesh.agent.pools import service as pool_service
from sdmesh.membership import Member
from sdmesh.pools import host as hc
from sdmesh.pools.records import Order, PoolRecord, Report, Tomb


class FakeCore:
    def __init__(self, names: list[str]) -> None:
        self.m = {n: Member(n, ("127.0.0.1", 1)) for n in names}

    def members(self) -> list[Member]:
        return list(self.m.values())

    def live_members(self) -> list[Member]:
        return [m for m in self.m.values() if m.state.live]

    def state_of(self, name: str) -> Any:
        return self.m[name].state if name in self.m else None

    def member(self, name: str) -> Member | None:
        return self.m.get(name)


class FakeDht:
    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.replicas = 1  # what put answers
        self.puts = 0
        self.fail_get = False

    async def put(self, key: str, value: bytes, generation: int) -> int:
        self.puts += 1
        if self.replicas:
            self.stored[key] = value
        return self.replicas

    async def get(self, key: str, quorum: int | None = None) -> Any:
        if self.fail_get:
            raise OSError("unreachable")
        value = self.stored.get(key)
        return SimpleNamespace(value=value) if value is not None else None

    def local_record(self, key: str) -> Any:
        return None

    def contacts(self) -> list[object]:
        return [object()]


class FakeClient:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[object] = []

    async def request(self, addr: Any, body: dict[str, Any], timeout: float) -> object:
        self.requests.append(body)
        reply = self.replies.pop(0) if self.replies else {"ok": True}
        if isinstance(reply, Exception):
            raise reply
        return reply


def service(tmp_path: Path, names: list[str] | None = None) -> ap.PoolService:
    names = names or ["h0", "h1", "h2"]
    node = SimpleNamespace(core=FakeCore(names), listeners=[], rumor_listeners=[], published=[])
    node.publish = lambda topic, key, payload: node.published.append((topic, key, payload))
    caps = SimpleNamespace(cpus=4, memory_mib=4096)
    return ap.PoolService(
        "h0",
        node,
        FakeDht(),
        FakeClient(),
        None,
        caps,
        tmp_path,  # type: ignore[arg-type]
    )


def rumor(topic: str, key: str, body: object, origin: str = "h9") -> Any:
    """A rumor as the membership layer delivers it (``origin``: who published it)."""
    return SimpleNamespace(topic=topic, key=key, payload=msgpack.packb(body), origin=origin)


def test_an_old_tombstone_heard_after_the_resubmission_is_ignored(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        svc._on_rumor(rumor("pool", "web", {"digest": "d", "state": "running", "generation": 3}))
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 2}))
        assert "web" not in svc.tombs

    asyncio.run(go())


def test_a_resubmission_clears_the_tombstone_before_it_tears_anything_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rumors, "TOMBSTONE_GRACE", 0.01)

    async def go() -> None:
        svc = service(tmp_path)
        svc.host.handle(hc.Recovered("web", "sfConfig:vm", "sfConfig:vm", 3, "h1", 1, 256))
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 2}))  # the old pool's
        assert svc.tombs["web"].generation == 2
        svc._on_rumor(rumor("pool", "web", {"digest": "d", "state": "deploying", "generation": 3}))
        assert "web" not in svc.tombs
        await asyncio.sleep(0.05)
        assert svc.host.inventory("web") == {"sfConfig:vm": 3}  # nothing torn down
        assert svc.take_orders([Order("web", 3, "h1", "d", "p", "deploy", "p", 1, 1)])[0][0] in (
            "accepted",
            "refused",
        )  # not "the pool was terminated"
        svc._on_rumor(rumor("tomb", "web", {"by": "h1", "gen": 3}))  # this one ends it
        assert svc.take_orders([Order("web", 3, "h1", "d", "p", "deploy", "p", 1, 1)]) == [
            ["refused", "the pool was terminated", 0]
        ]

    asyncio.run(go())


def test_undecodable_rumors_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        with caplog.at_level(logging.DEBUG, logger="sdmesh.agent.pools"):
            svc._on_rumor(SimpleNamespace(topic="tomb", key="web", payload=b"\xc1"))
        assert "undecodable tomb rumor for web" in caplog.text

    asyncio.run(go())


def test_a_record_no_replica_took_is_retried_until_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "retry_delay", lambda attempt, first=1.0, most=60.0: 0.01)

    async def go() -> None:
        svc = service(tmp_path)
        dht = svc.dht
        assert isinstance(dht, FakeDht)
        dht.replicas = 0
        record = PoolRecord("web", "d", 2, "h0", "running")
        assert await svc.write_record(record) is False
        assert "pool/web" not in dht.stored and svc._unsaved == {"web": record}
        await asyncio.sleep(0.05)
        assert svc._unsaved  # still failing: still retried
        dht.replicas = 2
        await asyncio.sleep(0.05)
        assert svc._unsaved == {}
        assert PoolRecord.decode(dht.stored["pool/web"][1:]) == record

    asyncio.run(go())


def test_lookup_tells_not_found_from_a_failed_lookup(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        assert await svc.lookup_record("web") == (True, None)
        assert isinstance(svc.dht, FakeDht)
        svc.dht.fail_get = True
        assert await svc.lookup_record("web") == (False, None)
        assert await svc.read_record("web") is None  # what the old reaper acted on

    asyncio.run(go())


def test_a_death_report_is_retried_until_the_shepherd_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "retry_delay", lambda attempt, first=1.0, most=60.0: 0.01)

    async def go() -> None:
        svc = service(tmp_path)
        svc.host.handle(hc.Recovered("web", "sfConfig:vm", "sfConfig:vm", 3, "h1", 1, 256))
        client = svc.client
        assert isinstance(client, FakeClient)
        # lost on the way, then reaching an agent that does not shepherd it (yet), then taken
        client.replies = [OSError("reset"), {"ok": True, "unknown": ["web"]}, {"ok": True}]
        svc._queue_report("h1", Report("web", 3, "h0", "sfConfig:vm", "ended", "crashed"))
        await asyncio.sleep(0.2)
        assert [r["rpc"] for r in client.requests] == ["reports"] * 3

    asyncio.run(go())


def test_one_bad_pool_does_not_skip_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        for pool in ("a", "b"):
            svc.host.handle(hc.Recovered(pool, "sfConfig:vm", "sfConfig:vm", 1, "h1", 1, 256))
            svc.known[pool] = ap.KnownPool("d", "running", "h1", time.monotonic(), 1)
        seen: list[str] = []
        real = svc._inventory_pool

        async def flaky(pool: str, now: float) -> None:
            seen.append(pool)
            if pool == "a":
                raise RuntimeError("boom")
            await real(pool, now)

        svc._inventory_pool = flaky  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="sdmesh.agent.pools"):
            await svc.send_inventories()
        assert seen == ["a", "b"]
        assert "pool a: inventory" in caplog.text

    asyncio.run(go())


def test_the_reaper_spares_a_pool_whose_record_lookup_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "REAP_GRACE", 0.0)

    async def go() -> None:
        svc = service(tmp_path)
        svc._reaper = hc.Reaper(0.0)
        svc.host.handle(hc.Recovered("web", "sfConfig:vm", "sfConfig:vm", 3, "h1", 1, 256))
        assert isinstance(svc.dht, FakeDht)
        svc.dht.fail_get = True
        for _ in range(3):
            await svc.send_inventories()
        assert svc.host.inventory("web")  # kept: no answer is no evidence
        svc.dht.fail_get = False
        svc.dht.stored["pool/web"] = b"\x00" + PoolRecord("web", "d", 3, "h1", "failed").encode()
        await svc.send_inventories()
        assert svc.host.pools["web"].tomb == 3  # the failed pool's leftovers are torn down
        await asyncio.sleep(0.05)
        assert svc.host.inventory("web") == {}

    asyncio.run(go())


def test_ended_pools_are_forgotten_after_the_retention(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        now = time.monotonic()
        old = now - pool_service.POOL_RETENTION - 1
        svc.tombs["gone"] = Tomb(2, old)
        svc.known["gone"] = ap.KnownPool("d1", "terminated", "h1", old, 2)
        svc.known["failed"] = ap.KnownPool("d2", "failed", "h1", old, 1)
        svc.known["live"] = ap.KnownPool("d3", "running", "h1", old, 1)
        svc.tombs["fresh"] = Tomb(1, now)
        svc._specs["d1"] = svc._specs["d2"] = svc._specs["d3"] = None  # type: ignore[assignment]
        assert sorted(svc.prune(now)) == ["failed", "gone"]
        assert sorted(svc.known) == ["live"] and sorted(svc.tombs) == ["fresh"]
        assert sorted(svc._specs) == ["d3"]

    asyncio.run(go())


def test_live_pools_are_announced_again_well_within_the_rumor_ttl(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        run = SimpleNamespace(
            core=SimpleNamespace(
                digest="d", generation=4, announcement=lambda: SimpleNamespace(state="running")
            )
        )
        svc.shepherding["web"] = run  # type: ignore[assignment]
        svc.announce()
        (topic, key, payload), *_ = svc.node.published  # type: ignore[attr-defined]
        assert (topic, key) == ("pool", "web")
        assert msgpack.unpackb(payload)["generation"] == 4
        assert rumors.ANNOUNCE_PERIOD <= 12 * 3600  # a rumor lives 24 h

    asyncio.run(go())
