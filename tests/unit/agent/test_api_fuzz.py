"""Hypothesis over the whole API surface: any method, any route with any segments, any query,
body and headers, over TCP (no token, a wrong one, a read token, the admin token) and over the
socket. Whatever comes, the answer is never a 500 and never carries a traceback.

The real app (build_app: the guard, every route) runs in a thread on its own event loop, over
a stand-in agent whose pool service and DHT accept everything: what is fuzzed is the API's
own handling of input, not the mesh behind it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmesh.agent.api import build_app
from sdmesh.agent.api_socket import bind_control_socket, remove_socket
from sdmesh.agent.config import AgentConfig
from sdmesh.agent.events import EventHub
from sdmesh.pools.records import PoolSpec
from sdmesh.testing.api import UnixHTTPConnection, make_token_file
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import TrustedOperator, TrustStore


class FakeHost:
    def pools_held(self) -> list[str]:
        return []

    def inventory(self, pool: str) -> list[object]:
        return []


class FakePools:
    name = "n0"
    shepherding: dict[str, object] = {}  # noqa: RUF012
    host = FakeHost()

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        return {"pool": spec.pool, "shepherd": "n0", "placement": [], "unplaced": []}

    async def submit(self, spec: PoolSpec, signature: bytes = b"") -> dict[str, object]:
        return {"pool": spec.pool, "shepherd": "n0", "digest": spec.digest}

    def pools(self) -> list[object]:
        return []

    async def status(self, pool: str) -> dict[str, object]:
        return {"pool": pool, "state": "running", "components": []}

    async def termination_floor(self, pool: str) -> int:
        return 1

    async def terminate(
        self, pool: str, signature: bytes = b"", newest: int | None = None
    ) -> dict[str, object]:
        return {"pool": pool, "terminating": True}


def _signing_trust() -> HostTrust:
    key = OperatorKey.generate("fuzz")
    store = TrustStore({key.public.key_id: TrustedOperator(key.public, Role.OPERATE)})
    return HostTrust(Path("/nonexistent"), store, key)


@dataclass
class StandIn:
    """What the API reads of an agent (sdmesh.agent.api_context.AgentView)."""

    config: AgentConfig
    status: str = "running"
    node: None = None
    dht: Any = None
    pools: Any = field(default_factory=FakePools)
    hypervisor: None = None
    events: EventHub = field(default_factory=EventHub)
    left: bool = False
    #: Trusts an operator and signs for callers with its key (the terminate route's checks).
    trust: HostTrust = field(default_factory=lambda: _signing_trust())

    def request_leave(self) -> None:
        self.left = True

    def drops(self) -> dict[str, int]:
        return {}

    def dht_drops(self) -> dict[str, int]:
        return {}

    def peers(self) -> list[dict[str, object]]:
        return []


@dataclass
class Served:
    port: int
    socket_path: Path
    admin: str
    reader: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz")
    token_file, admin = make_token_file(root)
    config = AgentConfig(name="n0", state_dir=root, api_token_file=str(token_file))
    agent = StandIn(config, pools=None)  # no DHT: its routes answer 503
    app = build_app(agent)  # type: ignore[arg-type]
    agent.pools = FakePools()  # after build_app, as in a starting agent: metrics skip it
    from sdmesh.agent.api_callers import TOKENS_KEY

    _, read_token = app[TOKENS_KEY].create("fuzz-reader", Role.READ)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bound = bind_control_socket(root / "api.sock", None)
        await web.SockSite(runner, bound.sock).start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        box.update(runner=runner, bound=bound, port=server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    ready.wait(30)
    try:
        yield Served(box["port"], box["bound"].path, admin, read_token)
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(30)
        remove_socket(box["bound"])
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


ROUTES = [
    "/",
    "/ui",
    "/ui/",
    "/ui/{x}",
    "/v1/openapi.yaml",
    "/v1/whoami",
    "/v1/health",
    "/v1/peers",
    "/v1/peers/{x}/force-leave",
    "/v1/leave",
    "/v1/dht/{x}",
    "/v1/pools",
    "/v1/pools/{x}",
    "/v1/templates",
    "/v1/templates/{x}",
    "/v1/tokens",
    "/v1/tokens/{x}",
    "/v1/auth/proof",
    "/metrics",
    "/{x}",
]
segments = st.text(min_size=0, max_size=40).map(lambda s: quote(s, safe=""))
paths = st.builds(lambda route, x: route.replace("{x}", x), st.sampled_from(ROUTES), segments)
queries = st.dictionaries(
    st.sampled_from(["backlog", "since", "generation", "access_token", "x", ""]),
    st.text(max_size=20),
    max_size=3,
).map(lambda q: "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "descriptor": st.text(max_size=200),
            "name": st.text(max_size=30) | st.integers(),
            "role": st.sampled_from(["read", "operate", "admin", "root", ""]),
            "dry_run": st.booleans() | st.text(max_size=5),
            "fields": json_values,
            "kinds": json_values,
            "id": st.text(max_size=70),
            "nonce": st.text(max_size=140),
        },
    ).map(lambda v: json.dumps(v).encode()),
)
callers = st.sampled_from(["none", "wrong", "reader", "admin", "socket"])
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=methods,
    path=paths,
    query=queries,
    body=bodies,
    caller=callers,
    accept=st.sampled_from(["", "application/json", "text/event-stream", "*/*"]),
    origin=st.none() | header_values,
)
def test_no_request_gets_a_500_or_a_traceback(
    served: Served,
    method: str,
    path: str,
    query: str,
    body: bytes,
    caller: str,
    accept: str,
    origin: str | None,
) -> None:
    target = path + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    if origin is not None:
        headers["Origin"] = origin
    token = {"wrong": "x" * 43, "reader": served.reader, "admin": served.admin}.get(caller)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection: http.client.HTTPConnection
    if caller == "socket":
        connection = UnixHTTPConnection(str(served.socket_path), timeout=20)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
    try:
        connection.request(method, target, body=body or None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    assert response.status != 500, (method, target, caller, raw[:300])
    assert b"Traceback" not in raw, (method, target, caller)
    if caller in ("none", "wrong") and response.status < 400:
        public = target.split("?")[0] in ("/", "/ui", "/ui/", "/v1/openapi.yaml")
        assert public or target.startswith(("/ui/", "/v1/auth/proof")), (method, target)
