"""Pools that survive hiccups: a host that misses a descriptor in the DHT tries again and
asks the pool's shepherd directly; only a real failure fails a leaf, and every failure is
logged at warning with its reason."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from sdmesh.agent import pools as ap
from sdmesh.agent.pools import hosting
from sdmesh.language import resolve_text
from sdmesh.pools import host as hc
from sdmesh.pools.records import PoolSpec
from sdmesh.pools.submission import build_spec

from .test_pool_cores import pool_text
from .test_pool_service_ends import FakeClient, FakeDht, service


def a_spec() -> PoolSpec:
    resolved = resolve_text(pool_text(1))
    return build_spec({"name": "web", "descriptor": resolved.to_sf()})


def ordered(svc: ap.PoolService, spec: PoolSpec, shepherd: str = "h1") -> None:
    """What an order from ``shepherd`` leaves on the host: the pool's digest, its shepherd."""
    svc._digests["web"] = spec.digest
    svc.host.pools["web"].shepherd = shepherd


def parts(svc: ap.PoolService) -> tuple[FakeDht, FakeClient]:
    assert isinstance(svc.dht, FakeDht) and isinstance(svc.client, FakeClient)
    return svc.dht, svc.client


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosting, "DESCRIPTOR_RETRY_FIRST", 0.01)
    monkeypatch.setattr(hosting, "DESCRIPTOR_RETRY_MOST", 0.02)


def test_a_descriptor_missed_in_the_dht_comes_from_the_shepherd(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        ordered(svc, spec)
        dht, client = parts(svc)
        assert f"spec/{spec.digest}" not in dht.stored  # the injected miss
        client.replies = [{"spec": spec.encode()}]
        hosted = await svc._hosted("web")
        assert hosted.spec.digest == spec.digest
        assert client.requests == [{"rpc": "spec", "digest": spec.digest}]
        await svc.close()

    asyncio.run(go())


def test_a_miss_everywhere_is_tried_again_until_the_dht_has_it(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        ordered(svc, spec)
        dht, client = parts(svc)
        dht.fail_get = True  # the DHT does not answer
        client.replies = [OSError("reset"), {"error": "descriptor not held"}]
        get = dht.get
        lookups = 0

        async def heals(key: str, quorum: int | None = None) -> Any:
            nonlocal lookups
            lookups += 1
            if lookups == 3:  # the third lookup finds it
                dht.fail_get = False
                dht.stored[key] = b"\x00" + spec.encode()
            return await get(key, quorum)

        dht.get = heals  # type: ignore[method-assign]
        hosted = await svc._hosted("web")
        assert hosted.spec.digest == spec.digest and lookups == 3
        await svc.close()

    asyncio.run(go())


def test_leaves_asking_at_once_share_one_load(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"spec": spec.encode()}]
        first, *others = await asyncio.gather(*(svc._hosted("web") for _ in range(20)))
        assert all(other is first for other in others)
        assert len(client.requests) == 1
        await svc.close()

    asyncio.run(go())


def test_a_missing_descriptor_fails_the_leaf_only_after_the_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"error": "descriptor not held"}] * hosting.DESCRIPTOR_ATTEMPTS
        with caplog.at_level(logging.WARNING, logger="sdmesh.agent.pools"):
            await svc._run_leaf(hc.RunLeaf("web", "sfConfig:pool:sd0:vm", "deploy", 1))
        assert len(client.requests) == hosting.DESCRIPTOR_ATTEMPTS
        await svc.close()

    asyncio.run(go())
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "deploy of sfConfig:pool:sd0:vm failed" in line and "not found" in line


def test_a_descriptor_that_does_not_match_is_not_tried_again(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        other = PoolSpec("web", spec.text + "\n", "0" * 64)
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"spec": other.encode()}]
        with pytest.raises(ap.PoolError, match=r"malformed|does not match"):
            await svc._hosted("web")
        assert len(client.requests) == 1
        await svc.close()

    asyncio.run(go())


def test_the_spec_rpc_sends_what_it_holds_and_nothing_else(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        await svc.store_spec(spec)
        svc._specs.clear()  # from its file
        reply = await svc.handle_rpc({"rpc": "spec", "digest": spec.digest})
        assert isinstance(reply, dict) and PoolSpec.decode(reply["spec"]) == spec
        (tmp_path / "secret.spec").write_bytes(b"x")
        for digest in ("../secret", "f" * 64, 7):
            assert await svc.handle_rpc({"rpc": "spec", "digest": digest}) == {
                "error": "descriptor not held"
            }
        await svc.close()

    asyncio.run(go())
