"""sdmesh/agent/openapi.yaml describes exactly the routes build_app serves, and is served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import sdmesh.agent
from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_access import PUBLIC_ROUTES, ROUTE_ROLES, needed_role
from sdmesh.agent.config import AgentConfig
from sdmesh.transport import load_security

OPENAPI = Path(sdmesh.agent.__file__).parent / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def document() -> dict[str, Any]:
    loaded = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def app() -> web.Application:
    """The real app of an agent that was not started: every route build_app (and whatever
    it calls) registers, including those added after this test was written."""
    agent = Agent(AgentConfig(name="docs"), load_security(None, insecure=True))
    return build_app(agent)


def served_routes(application: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in application.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET; not described apart
            continue
        assert route.resource is not None
        routes.add((route.method, route.resource.canonical))
    return routes


def test_the_description_lists_exactly_the_routes_build_app_serves() -> None:
    described = set(operations(document()))
    served = served_routes(app())
    assert served - described == set(), "routes served but not in sdmesh/agent/openapi.yaml"
    assert described - served == set(), "routes in sdmesh/agent/openapi.yaml but not served"


def test_it_is_openapi_3_1_and_every_reference_resolves() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/"), ref
                target: Any = doc
                for part in ref[2:].split("/"):
                    assert part in target, f"{ref} does not resolve"
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_operations_have_unique_ids_and_document_their_path_parameters() -> None:
    doc = document()
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids))

    def resolved(parameter: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in parameter:
            found = doc["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
            assert isinstance(found, dict)
            return found
        return parameter

    for (method, path), operation in operations(doc).items():
        assert operation.get("responses"), f"{method} {path} has no responses"
        parameters = [*doc["paths"][path].get("parameters", []), *operation.get("parameters", [])]
        declared = {p["name"] for p in map(resolved, parameters) if p["in"] == "path"}
        in_path = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert in_path == declared, f"{method} {path}: path parameters {in_path ^ declared}"


def test_public_operations_are_what_the_guard_lets_through() -> None:
    """``security: []`` marks what needs no token; every other operation answers 401 and
    names the role it needs (``x-sdmesh-role``), which is the role the guard asks for."""
    doc = document()
    for (method, path), operation in operations(doc).items():
        public = operation.get("security") == []
        assert ((method, path) in PUBLIC_ROUTES) == public, f"{method} {path}"
        if public:
            assert "x-sdmesh-role" not in operation, f"{method} {path}"
            continue
        assert "401" in operation["responses"], f"{method} {path} does not document 401"
        assert operation.get("x-sdmesh-role") == needed_role((method, path)).label, (
            f"{method} {path}: x-sdmesh-role"
        )
        assert (method, path) in ROUTE_ROLES, f"{method} {path} is missing from ROUTE_ROLES"


@pytest.mark.asyncio
async def test_the_agent_serves_the_description_as_yaml() -> None:
    async with TestClient(TestServer(app())) as client:
        response = await client.get("/v1/openapi.yaml")
        assert response.status == 200
        assert response.content_type == "application/yaml"
        assert await response.read() == OPENAPI.read_bytes()
        head = await client.head("/v1/openapi.yaml")
        assert head.status == 200
