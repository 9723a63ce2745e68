"""Every built-in template runs, not just resolves: submitted through POST /v1/templates to
two real agents on loopback (test-driver hosts), each pool reaches running, then terminates
leaving no domain behind. (The slide's scheduled VMs had no disk: valid, but unbootable.)"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.agent.dashboard import builtin_templates

from .test_pools_loopback import PoolMesh


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[PoolMesh]:
    mesh = PoolMesh(tmp_path)
    try:
        mesh.start_host("a", None, cpus=4, memory_mib=4096)
        mesh.start_host("b", "a", cpus=4, memory_mib=4096)
        mesh.wait(lambda: len(mesh.view("a")) == len(mesh.view("b")) == 2, 30, "no mesh")
        yield mesh
    finally:
        mesh.stop()


def call(mesh: PoolMesh, agent: str, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(
        mesh.url(agent) + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **mesh.headers()},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_every_builtin_template_runs_and_terminates(two_hosts: PoolMesh) -> None:
    names = sorted(builtin_templates())
    assert names
    for template in names:
        done = call(two_hosts, "a", "POST", f"/v1/templates/{template}", {"fields": {"count": 2}})
        assert isinstance(done, dict)
        pool = str(done["pool"])
        assert pool.startswith(f"{template}-")
        two_hosts.wait(
            lambda: two_hosts.status("b", pool)["state"] in ("running", "failed"),  # noqa: B023
            30,
            f"{template} never settled",
        )
        status = two_hosts.status("b", pool)
        assert status["state"] == "running", (template, status)
        vms = [c for c in status["components"] if c["domain"]]  # type: ignore[union-attr]
        assert len(vms) == 2 and all(c["host"] in ("a", "b") for c in vms), status
        call(two_hosts, "b", "DELETE", f"/v1/pools/{pool}")  # from the other agent
        two_hosts.wait(
            lambda: two_hosts.domains("a") == two_hosts.domains("b") == [],
            30,
            f"{template}: domains left after terminate",
        )
