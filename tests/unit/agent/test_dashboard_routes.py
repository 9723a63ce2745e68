"""The dashboard's routes with a fake pool service: the page and its files, and
/v1/templates (list, show, dry run, submit, errors that name the field). The app holds only
what the routes use; the browser test (tests/integration/agent) runs them in real agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent import dashboard
from sdmesh.agent.api import AGENT_KEY, resolve_submission
from sdmesh.agent.pools import PoolError
from sdmesh.pools.records import PoolSpec


class FakePools:
    """What the template routes use of PoolService; records what it was given."""

    name = "n0"

    def __init__(self) -> None:
        self.submitted: list[PoolSpec] = []
        self.refuse: PoolError | None = None

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        return {
            "pool": spec.pool,
            "shepherd": "n1",
            "placement": [
                {"path": p, "host": "n2", "vcpus": 1, "memory_mib": 128} for p in spec.kinds
            ],
            "unplaced": [],
        }

    async def submit(self, spec: PoolSpec, signature: bytes = b"") -> dict[str, object]:
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append(spec)
        return {"pool": spec.pool, "shepherd": "n1", "digest": spec.digest}


class FakeAgent:
    def __init__(self) -> None:
        self.pools = FakePools()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    agent = FakeAgent()
    app = web.Application()
    app[AGENT_KEY] = agent
    dashboard.add_routes(app, resolve_submission, lambda request, spec, body: b"")
    async with TestClient(TestServer(app)) as test_client:
        test_client.agent = agent  # type: ignore[attr-defined]
        yield test_client


def pools_of(client: TestClient[Any, Any]) -> FakePools:
    return client.agent.pools  # type: ignore[attr-defined,no-any-return]


async def test_the_page_is_served_at_the_root_and_under_ui(client: TestClient[Any, Any]) -> None:
    root = await client.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/ui/"
    page = await client.get("/")
    assert page.status == 200 and page.url.path == "/ui/"
    assert page.content_type == "text/html"
    html = await page.text()
    assert '<script src="app.js" defer></script>' in html and "style.css" in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = await client.get(f"/ui/{name}")
        assert response.status == 200 and response.content_type == kind
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_nothing_else_is_served_from_the_package(client: TestClient[Any, Any]) -> None:
    for path in ("/ui/../api.py", "/ui/%2e%2e/api.py", "/ui/dashboard.py", "/ui/web"):
        response = await client.get(path)
        assert response.status == 404, path


async def test_the_page_uses_nothing_from_elsewhere(client: TestClient[Any, Any]) -> None:
    for name in ("", "app.js", "style.css"):
        text = await (await client.get(f"/ui/{name}")).text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


async def test_templates_are_listed_without_their_descriptors(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/v1/templates")
    assert response.status == 200
    listed = await response.json()
    by_name = {t["name"]: t for t in listed}
    assert {"virtual-pool", "sequential-pool", "scheduled-pool"} <= set(by_name)
    virtual = by_name["virtual-pool"]
    assert virtual["title"] and virtual["description"] and "descriptor" not in virtual
    fields = {f["name"]: f for f in virtual["fields"]}
    assert {"name", "count", "memory", "vcpus", "image"} <= set(fields)
    assert set(fields["memory"]) >= {"name", "type", "default", "help"}
    shown = await (await client.get("/v1/templates/virtual-pool")).json()
    assert "sfConfig extends Compound" in shown["descriptor"]


async def test_a_dry_run_fills_missing_fields_and_submits_nothing(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post(
        "/v1/templates/virtual-pool",
        json={"fields": {"count": "2", "memory": 512}, "name": "web", "dry_run": True},
    )
    assert response.status == 200, await response.text()
    plan = await response.json()
    assert plan["pool"] == "web" and plan["shepherd"] == "n1"
    assert "memory 512;" in plan["descriptor"] and "vcpus 1;" in plan["descriptor"]
    assert '"/data/kvm/debian-12.qcow2"' in plan["descriptor"]  # the default image
    assert plan["descriptor"].count("extends VirtualMachine") == 2
    assert pools_of(client).submitted == []


async def test_submit_renders_resolves_and_hands_the_pool_to_the_service(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post(
        "/v1/templates/scheduled-pool", json={"fields": {"name": "sched", "count": 4}}
    )
    assert response.status == 201, await response.text()
    result = await response.json()
    assert result["pool"] == "sched" and result["shepherd"] == "n1"
    (spec,) = pools_of(client).submitted
    assert spec.pool == "sched" and spec.submitted_by == "n0"
    assert spec.kinds["sfConfig:VMs2Dispatch:worker4:vm"] == "VM"
    assert result["digest"] == spec.digest


async def test_without_a_name_one_is_made_up_from_the_template(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post("/v1/templates/sequential-pool", json={})
    assert response.status == 201, await response.text()
    assert (await response.json())["pool"].startswith("sequential-pool-")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"fields": {"memory": 1}}, "memory"),
        ({"fields": {"count": "lots"}}, "count"),
        ({"fields": {"flavour": "hyperv"}}, "flavour"),
        ({"fields": {"disk": "10G"}}, "disk"),
        ({"fields": {"name": "UPPER case"}}, "name"),
        ({"name": "no spaces please"}, "name"),
        ({"name": "a", "fields": {"name": "b"}}, "name"),
        ({"fields": [1, 2]}, "fields"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    client: TestClient[Any, Any], body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/templates/virtual-pool", json=body)
    assert response.status == 400
    error = await response.json()
    assert field in error["fields"], error
    assert error["error"]
    assert pools_of(client).submitted == []


async def test_unknown_templates_and_bad_bodies(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/templates/nope")).status == 404
    assert (await client.post("/v1/templates/nope", json={})).status == 404
    response = await client.post("/v1/templates/virtual-pool", data=b"{not json")
    assert response.status == 400 and "JSON" in (await response.json())["error"]
    response = await client.post("/v1/templates/virtual-pool", json=[1])
    assert response.status == 400


async def test_a_pool_that_exists_is_a_conflict(client: TestClient[Any, Any]) -> None:
    pools_of(client).refuse = PoolError("pool web already exists", 409)
    response = await client.post("/v1/templates/virtual-pool", json={"name": "web"})
    assert response.status == 409
    assert "already exists" in await response.text()
