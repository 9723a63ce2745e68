"""Roles on the real app: tokens of each role against the routes, shell components need admin,
tokens stored hashed and revoked, whoami, and one audit line per state-changing request."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_callers import TOKENS_KEY
from sdmesh.agent.api_tokens import STORE_NAME, TokenStore, digest
from sdmesh.agent.audit import AUDIT_LOGGER
from sdmesh.pools.records import PoolSpec
from sdmesh.testing.api import bearer, secured_config
from sdmesh.transport import load_security
from sdmesh.trust.components import required_role_for, required_role_for_kinds
from sdmesh.trust.roles import Role

VMS = """#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {
    vm extends KvmDomain { memory 256; vcpus 1; }
}
"""
SHELL = """#include "org/smartfrog/components.sf"
#include "org/smartfrog/services/shellscript/components.sf"
sfConfig extends Compound {
    sh extends BashShell;
    run extends Script { shell LAZY ATTRIB sh; startScript "id"; }
}
"""
#: A prototype of its own built on Script: its kind is not "Script", its sfClass still is.
DISGUISED = """#include "org/smartfrog/components.sf"
#include "org/smartfrog/services/shellscript/components.sf"
Harmless extends Script;
sfConfig extends Compound {
    sh extends BashShell;
    run extends Harmless { shell LAZY ATTRIB sh; startScript "id"; }
}
"""


class FakePools:
    name = "n0"

    def __init__(self) -> None:
        self.submitted: list[PoolSpec] = []

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        return {"pool": spec.pool, "shepherd": "n0", "placement": [], "unplaced": []}

    async def submit(self, spec: PoolSpec, signature: bytes = b"") -> dict[str, object]:
        self.submitted.append(spec)
        return {"pool": spec.pool, "shepherd": "n0", "digest": spec.digest}

    def pools(self) -> list[object]:
        return []

    async def terminate(self, pool: str) -> dict[str, object]:
        return {"pool": pool, "terminating": True}


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    config, token = secured_config(tmp_path)
    agent = Agent(config, load_security(None, insecure=True))
    app = build_app(agent)
    agent.pools = FakePools()  # type: ignore[assignment]
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        test_client.admin = token  # type: ignore[attr-defined]
        test_client.agent = agent  # type: ignore[attr-defined]
        yield test_client


async def make_token(client: Client, name: str, role: str) -> str:
    admin = client.admin  # type: ignore[attr-defined]
    made = await client.post("/v1/tokens", json={"name": name, "role": role}, headers=bearer(admin))
    assert made.status == 201, await made.text()
    return str((await made.json())["token"])


def submission(text: str, name: str) -> dict[str, object]:
    return {"descriptor": text, "name": name}


async def test_read_sees_but_cannot_submit_terminate_or_leave(client: Client) -> None:
    reader = bearer(await make_token(client, "viewer", "read"))
    assert (await client.get("/v1/pools", headers=reader)).status == 200
    refused = await client.post("/v1/pools", json=submission(VMS, "p1"), headers=reader)
    assert refused.status == 403
    answer = await refused.json()
    assert answer["needed"] == "operate" and "needs the operate role" in answer["error"]
    assert "token:viewer has read" in answer["error"]
    assert (await client.delete("/v1/pools/p1", headers=reader)).status == 403
    assert (await client.post("/v1/leave", headers=reader)).status == 403
    assert client.agent.pools.submitted == []  # type: ignore[attr-defined]


async def test_operate_submits_vms_but_not_shell_components(client: Client) -> None:
    operator = bearer(await make_token(client, "ops", "operate"))
    made = await client.post("/v1/pools", json=submission(VMS, "vms"), headers=operator)
    assert made.status == 201, await made.text()
    for text in (SHELL, DISGUISED):
        refused = await client.post("/v1/pools", json=submission(text, "sh"), headers=operator)
        assert refused.status == 403
        assert "needs the admin role" in await refused.text()
    dry = await client.post(
        "/v1/pools", json={**submission(SHELL, "sh"), "dry_run": True}, headers=operator
    )
    assert dry.status == 403, "a dry run of a shell pool needs admin too"
    # A client cannot talk its way down by naming harmless kinds.
    lying = {**submission(SHELL, "sh"), "kinds": {"sfConfig:run": "Compound"}}
    assert (await client.post("/v1/pools", json=lying, headers=operator)).status == 403
    assert (await client.post("/v1/leave", headers=operator)).status == 403
    pools = client.agent.pools.submitted  # type: ignore[attr-defined]
    assert [p.pool for p in pools] == ["vms"]


async def test_admin_submits_shell_components(client: Client) -> None:
    admin = bearer(client.admin)  # type: ignore[attr-defined]
    made = await client.post("/v1/pools", json=submission(SHELL, "sh"), headers=admin)
    assert made.status == 201, await made.text()


async def test_whoami_says_what_the_role_allows(client: Client) -> None:
    for role, allowed in (
        ("read", set()),
        ("operate", {"submit", "terminate", "templates"}),
        ("admin", {"submit", "terminate", "templates", "leave", "force_leave", "tokens"}),
    ):
        token = await make_token(client, f"who-{role}", role)
        answer = await (await client.get("/v1/whoami", headers=bearer(token))).json()
        assert answer["name"] == f"token:who-{role}" and answer["role"] == role
        assert answer["via"] == "tcp"
        assert {k for k, v in answer["actions"].items() if v} == allowed, role


async def test_tokens_are_stored_hashed_private_and_revocable(
    client: Client, tmp_path: Path
) -> None:
    token = await make_token(client, "ci", "operate")
    store = tmp_path / STORE_NAME
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    text = store.read_text()
    assert token not in text and digest(token) in text
    listed = await (await client.get("/v1/tokens", headers=bearer(client.admin))).json()  # type: ignore[attr-defined]
    assert {e["name"]: e["role"] for e in listed} == {"api-token-file": "admin", "ci": "operate"}
    assert all("token" not in e and "sha256" not in e for e in listed)
    assert (await client.get("/v1/whoami", headers=bearer(token))).status == 200
    again = await client.post(
        "/v1/tokens",
        json={"name": "ci", "role": "read"},
        headers=bearer(client.admin),  # type: ignore[attr-defined]
    )
    assert again.status == 409
    revoked = await client.delete("/v1/tokens/ci", headers=bearer(client.admin))  # type: ignore[attr-defined]
    assert revoked.status == 200
    assert (await client.get("/v1/whoami", headers=bearer(token))).status == 401
    # A restart reads the store: the revocation holds, the legacy token still works.
    reloaded = TokenStore(store, client.admin)  # type: ignore[attr-defined]
    assert reloaded.lookup(token) is None
    assert reloaded.lookup(client.admin) is not None  # type: ignore[attr-defined]
    legacy = await client.delete("/v1/tokens/api-token-file", headers=bearer(client.admin))  # type: ignore[attr-defined]
    assert legacy.status == 409 and "api-token-file" in await legacy.text()


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name", "role": "read"},
        {"name": "x" * 80, "role": "read"},
        {"name": "ok", "role": "root"},
        {"name": 3, "role": "read"},
        {"role": "read"},
    ],
)
async def test_bad_token_requests_are_400(client: Client, body: dict[str, Any]) -> None:
    answer = await client.post("/v1/tokens", json=body, headers=bearer(client.admin))  # type: ignore[attr-defined]
    assert answer.status == 400
    assert len(client.app[TOKENS_KEY]) == 1


async def test_state_changing_requests_leave_one_audit_line_each(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    reader = await make_token(client, "auditee", "read")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        await client.post("/v1/pools", json=submission(VMS, "audited"))  # no token: 401
        await client.post("/v1/pools", json=submission(VMS, "audited"), headers=bearer(reader))
        admin = bearer(client.admin)  # type: ignore[attr-defined]
        await client.post("/v1/pools", json=submission(VMS, "audited"), headers=admin)
        await client.get("/v1/pools", headers=admin)  # reads are not audited
        await client.delete("/v1/pools/audited", headers=admin)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [(x["who"], x["method"], x["status"], x["result"]) for x in lines] == [
        ("unidentified", "POST", 401, "refused"),
        ("token:auditee", "POST", 403, "refused"),
        ("token:api-token-file", "POST", 201, "ok"),
        ("token:api-token-file", "DELETE", 202, "ok"),
    ]
    assert lines[2]["pool"] == "audited" and lines[3]["pool"] == "audited"
    assert lines[1]["needed"] == "operate" and lines[1]["role"] == "read"
    assert all(x["via"] == "tcp" and x["route"].startswith("/v1/pools") for x in lines)


def test_the_component_table() -> None:
    assert required_role_for_kinds({"a": "KvmDomain", "b": "Compound"}) is Role.OPERATE
    assert required_role_for_kinds({"a": "Script"}) is Role.ADMIN
    assert required_role_for_kinds({"a": "BashShell"}) is Role.ADMIN
    text = 'sfClass "org.smartfrog.services.shellscript.SFScriptImpl";'
    assert required_role_for(text, {"a": "Harmless"}) is Role.ADMIN
    assert required_role_for('sfClass "sdmesh.components.VirtualMachine";', {}) is Role.OPERATE


def test_a_store_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "gone" / STORE_NAME)  # its directory does not exist
    with pytest.raises(OSError):
        store.create("ci", Role.READ)
    assert len(store) == 0
    good = TokenStore(tmp_path / STORE_NAME)
    _, secret = good.create("ci", Role.READ)
    (tmp_path / STORE_NAME).unlink()
    tmp_path.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anywhere: the failure cannot be made here
            with pytest.raises(OSError):
                good.revoke("ci")
            assert good.lookup(secret) is not None
    finally:
        tmp_path.chmod(0o700)


def test_a_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / STORE_NAME
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a token store"):
        TokenStore(path)
    path.write_text('{"tokens": [{"name": "x", "role": "read", "sha256": "short"}]}')
    with pytest.raises(ValueError, match="malformed digest"):
        TokenStore(path)


def test_both_ends_write_an_endpoint_the_same_way() -> None:
    from sdmesh.agent.api_tokens import endpoint_label, proof

    assert endpoint_label(("127.0.0.1", 7948)) == "127.0.0.1:7948"
    assert endpoint_label(("::ffff:127.0.0.1", 7948, 0, 0)) == "127.0.0.1:7948"
    assert endpoint_label(("::1", 7948, 0, 0)) == "[::1]:7948"
    assert endpoint_label(("fe80::1%eth0", 7948, 0, 2)) == "[fe80::1]:7948"
    key = digest("t" * 43)
    assert proof(key, "n" * 64, "127.0.0.1:7948") != proof(key, "n" * 64, "127.0.0.1:7949")
    assert proof(key, "n" * 64, "127.0.0.1:7948") != proof(key, "m" * 64, "127.0.0.1:7948")


async def test_a_refused_signature_is_an_event_as_well_as_a_403(tmp_path: Path) -> None:
    """Issue 11: a refusal is counted (metric) and published (``refused`` event)."""
    from sdmesh.agent.guards import signature_guard
    from sdmesh.trust.host import HostTrust

    published: list[dict[str, object]] = []
    trust = HostTrust.open(tmp_path / "nobody-trusted")
    pools = SimpleNamespace(signature_of=lambda pool: b"", name="h0")
    guard = signature_guard(trust, pools, published.append)  # type: ignore[arg-type]
    node = SimpleNamespace(path="sfConfig:vm", description={"sfClass": "x"})
    spec = SimpleNamespace(pool="web", digest="d" * 64)
    reason = guard(spec, node, "deploy")  # type: ignore[arg-type]
    assert reason is not None and "no operator signature" in reason
    assert published[0]["type"] == "refused" and published[0]["reason"] == "unsigned"
    assert published[0]["pool"] == "web" and published[0]["path"] == "sfConfig:vm"
    assert trust.refusals.counts["unsigned"] == 1
