"""What API clients send cannot freeze or crash the agent: descriptors that multiply when
resolved are refused, resolution runs off the event loop, malformed JSON bodies get 400,
pool records cannot be written through the debug DHT route, the token travels in the query
for the event stream only, and event streams are capped."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent import api_input, api_observe
from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_access import Access, access_middleware
from sdmesh.agent.api_tokens import TokenStore
from sdmesh.agent.events import KEEP_ENDED_POOLS, EventHub, _PoolFeed
from sdmesh.dht.counters import DhtCounters
from sdmesh.pools.records import PoolSpec
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import load_security

TOKEN = "s3cret-token-0123456789abcdefghij"


def exponential(levels: int = 16) -> str:
    """Each level extends the previous one twice: 2**levels copies from under 1 KiB."""
    lines = ["L0 extends { x 1; }"]
    lines += [f"L{i} extends {{ a extends L{i - 1}; b extends L{i - 1}; }}" for i in range(1, 17)]
    return "\n".join(lines[: levels + 1]) + f"\nsfConfig extends L{levels};\n"


class FakePools:
    name = "n0"

    def __init__(self) -> None:
        self.submitted: list[PoolSpec] = []

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        return {"pool": spec.pool, "shepherd": "n0", "placement": [], "unplaced": []}

    async def submit(self, spec: PoolSpec, signature: bytes = b"") -> dict[str, object]:
        self.submitted.append(spec)
        return {"pool": spec.pool, "shepherd": "n0", "digest": spec.digest}


class FakeDht:
    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.counters = DhtCounters()

    def contacts(self) -> list[object]:
        return []

    async def put(self, key: str, value: bytes, generation: int) -> bool:
        self.stored[key] = value
        return True


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The real app of an agent that was not started, with a stand-in pool service."""
    config, token = secured_config(tmp_path)
    agent = Agent(config, load_security(None, insecure=True))
    app = build_app(agent)
    agent.pools = FakePools()  # type: ignore[assignment]
    agent.dht = FakeDht()  # type: ignore[assignment]
    server = TestServer(app, host="127.0.0.1")
    async with TestClient(server, headers=bearer(token)) as test_client:
        test_client.agent = agent  # type: ignore[attr-defined]
        yield test_client


# ----------------------------------------------------------------- resolution (item 1)
async def test_a_descriptor_that_multiplies_is_refused_quickly_with_a_located_error(
    client: TestClient[web.Request, web.Application],
) -> None:
    text = exponential()
    assert len(text) < 1000
    started = time.monotonic()
    answer = await client.post("/v1/pools", json={"descriptor": text, "name": "boom"})
    assert answer.status == 400
    message = await answer.text()
    assert "the resolved tree exceeds 250,000 components" in message
    assert "<pool boom>:" in message  # located: FILE:LINE:COL
    assert time.monotonic() - started < 10  # it took 13 s and doubled per level before
    assert client.agent.pools.submitted == []  # type: ignore[attr-defined]


async def test_the_api_answers_probes_while_a_descriptor_resolves(
    client: TestClient[web.Request, web.Application],
) -> None:
    """The exponential descriptor is resolved in a worker thread: health probes sent
    meanwhile are answered at once, then the submission gets its 400."""
    posted = asyncio.create_task(
        client.post("/v1/pools", json={"descriptor": exponential(), "name": "boom"})
    )
    probes = 0
    while not posted.done():
        started = time.monotonic()
        health = await client.get("/v1/health")
        assert health.status == 200
        # Generous: the worker holds the GIL between switches, so a loaded machine is slow;
        # the deterministic proof is test_resolution_runs_off_the_loop_under_a_time_limit.
        assert time.monotonic() - started < 2, "the event loop was blocked"
        probes += 1
        await asyncio.sleep(0.01)
    assert (await posted).status == 400
    assert probes >= 1


async def test_resolution_runs_off_the_loop_under_a_time_limit(
    client: TestClient[web.Request, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministically: a resolution in the worker does not block probes, and one that
    takes longer than the limit (here a cold worker's start-up) is killed and answered 503."""
    from sdmesh.pools import resolve_worker

    monkeypatch.setattr(resolve_worker, "RESOLVE_SECONDS", 0.05)
    body = {"descriptor": "sfConfig extends { x 1; }", "name": "slow"}
    posted = asyncio.create_task(client.post("/v1/pools", json=body))
    await asyncio.sleep(0.01)
    assert (await client.get("/v1/health")).status == 200
    answer = await posted
    assert answer.status == 503
    assert "took over" in await answer.text()
    await resolve_worker.stop_resolver()


async def test_a_normal_submission_still_works(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = {"descriptor": "sfConfig extends { x 1; }", "name": "fine", "dry_run": True}
    answer = await client.post("/v1/pools", json=body)
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["pool"] == "fine"


# -------------------------------------------------------------- bad bodies (item 3)
@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"[]", "a JSON object, not an array"),
        (b'"x"', "a JSON object, not a string"),
        (b"null", "a JSON object, not null"),
        (b"3", "a JSON object, not a number"),
        (b"{nope", "must be JSON"),
        (b"\xff\xfe", "must be JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"descriptor": "sfConfig extends { x \\"\\ud800\\"; }"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
    ],
)
async def test_bodies_that_are_not_usable_objects_get_400(
    client: TestClient[web.Request, web.Application], body: bytes, said: str
) -> None:
    answer = await client.post("/v1/pools", data=body, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert said in await answer.text()


async def test_template_submissions_refuse_bad_bodies_as_json(
    client: TestClient[web.Request, web.Application],
) -> None:
    listed = await (await client.get("/v1/templates")).json()
    name = listed[0]["name"]
    for body, said in (
        (b"[]", "a JSON object"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"fields": {"name": "p\\ud800"}}', "lone UTF-16 surrogate"),
    ):
        answer = await client.post(
            f"/v1/templates/{name}", data=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status == 400
        assert said in (await answer.json())["error"]


async def test_bodies_over_the_limit_get_413(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert api_input.MAX_REQUEST_BYTES == 4 * 1024 * 1024
    descriptor = "sfConfig extends { x 1; }\n" + "// padding\n" * (420 * 1024)
    answer = await client.post("/v1/pools", json={"descriptor": descriptor})
    assert answer.status == 413


# ------------------------------------------------------------------- DHT (item 2)
@pytest.mark.parametrize("key", ["pool/web", "spec/abc", "pool/web#0", "spec/"])
async def test_pool_records_cannot_be_written_through_the_debug_route(
    client: TestClient[web.Request, web.Application], key: str
) -> None:
    from urllib.parse import quote

    # Quoted: the route's {key} is one path segment, and %2F decodes to "/" in it.
    answer = await client.put(f"/v1/dht/{quote(key, safe='')}", data=b"forged")
    assert answer.status == 403
    assert "pool service" in await answer.text()
    assert client.agent.dht.stored == {}  # type: ignore[attr-defined]


async def test_other_keys_can_still_be_written(
    client: TestClient[web.Request, web.Application],
) -> None:
    answer = await client.put("/v1/dht/debug-key", data=b"hello")
    assert answer.status == 200 and await answer.json() == {"stored": True}
    assert client.agent.dht.stored == {"debug-key": b"hello"}  # type: ignore[attr-defined]


# ------------------------------------------------------------ query token (item 6)
async def ok(request: web.Request) -> web.Response:
    return web.json_response({})


@pytest_asyncio.fixture
async def remote_client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Routes behind the token (every TCP client presents one, loopback included)."""
    access = Access(TokenStore(None, TOKEN), {})
    app = web.Application(middlewares=[access_middleware(access)])
    app.router.add_get("/v1/peers", ok)
    app.router.add_post("/v1/pools", ok)
    app.router.add_delete("/v1/pools/{pool}", ok)
    app.router.add_get("/v1/events", ok)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_the_query_token_is_accepted_for_the_event_stream_only(
    remote_client: TestClient[web.Request, web.Application],
) -> None:
    query = {"access_token": TOKEN}
    assert (await remote_client.get("/v1/events", params=query)).status == 200
    refused = await remote_client.get("/v1/peers", params=query)
    assert refused.status == 401
    assert "GET /v1/events only" in (await refused.json())["error"]
    assert (await remote_client.post("/v1/pools", params=query)).status == 401
    assert (await remote_client.delete("/v1/pools/p", params=query)).status == 401
    # The header works everywhere (it is what the dashboard's fetch calls send).
    header = {"Authorization": f"Bearer {TOKEN}"}
    assert (await remote_client.get("/v1/peers", headers=header)).status == 200
    assert (await remote_client.post("/v1/pools", headers=header)).status == 200


def test_the_dashboard_sends_the_token_in_a_header_except_to_eventsource() -> None:
    from sdmesh.agent.dashboard import WEB_DIR

    script = (WEB_DIR / "app.js").read_text()
    assert "headers.Authorization = `Bearer ${state.token}`" in script
    uses = [line for line in script.splitlines() if "access_token" in line]
    assert uses and all("/v1/events" in line or "const query" in line for line in uses)
    assert "new EventSource(`/v1/events${query}`)" in script


# --------------------------------------------------------------- events (item 11)
async def test_event_streams_are_capped(
    client: TestClient[web.Request, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_observe, "MAX_STREAMS", 2)
    streams = [await client.get("/v1/events") for _ in range(2)]
    assert [s.status for s in streams] == [200, 200]
    refused = await client.get("/v1/events")
    assert refused.status == 503 and "event streams" in await refused.text()
    assert (await client.get("/v1/health")).status == 200
    for stream in streams:
        stream.close()
    for _ in range(100):  # the server notices the closed streams
        answer = await client.get("/v1/events")
        if answer.status == 200:
            answer.close()
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("closed streams were not released")


class _Pools:
    name = "n0"
    shepherding: ClassVar[dict[str, object]] = {}


def test_ended_pools_are_pruned_from_the_feed() -> None:
    hub = EventHub()
    feed = _PoolFeed(hub, _Pools())  # type: ignore[arg-type]
    feed.pool("alive", "running", "n1", 1, "")
    for i in range(KEEP_ENDED_POOLS + 50):
        feed.pool(f"p{i}", "running", "n1", 1, "")
        feed.pool(f"p{i}", "terminated", "n1", 1, "")
    assert len(feed.seen) == KEEP_ENDED_POOLS + 1
    assert "alive" in feed.seen and "p0" not in feed.seen
    assert f"p{KEEP_ENDED_POOLS + 49}" in feed.seen
    # A remembered pool still makes no duplicate event; a pool id used again is live again.
    published = hub.published
    feed.pool(f"p{KEEP_ENDED_POOLS + 49}", "terminated", "n1", 1, "")
    assert hub.published == published
    feed.pool(f"p{KEEP_ENDED_POOLS + 49}", "deploying", "n1", 2, "")
    for i in range(KEEP_ENDED_POOLS):
        feed.pool(f"q{i}", "terminated", "n1", 1, "")
    assert feed.seen[f"p{KEEP_ENDED_POOLS + 49}"][0] == "deploying"


def test_json_helper_names_the_kind_of_body() -> None:
    with pytest.raises(api_input.BadInput, match="not a boolean"):
        api_input.parse_json_object(b"true")
    assert api_input.parse_json_object(json.dumps({"a": ["é"]}).encode()) == {"a": ["é"]}
