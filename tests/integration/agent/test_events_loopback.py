"""Live events and metrics across real `sdmesh join` processes on loopback.

A follower on an agent that is not the pool's shepherd sees the pool's life: its state from
gossip, and the components this host runs, running then terminated; /metrics counts them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sdmesh.pools.ownership import shepherd as shepherd_of

from .test_pools_loopback import PoolMesh, pool_file


class Follower:
    """Reads a stream's lines in a thread (``sdmesh events --json``, or SSE via urllib)."""

    def __init__(self, lines: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self._thread.start()

    def _read(self, lines: Any) -> None:
        for line in lines:
            self.lines.append(line.decode() if isinstance(line, bytes) else line)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            line = line.strip()
            if line.startswith("data: "):
                line = line[6:]
            if line.startswith("{"):
                found.append(json.loads(line))
        return found


def metrics(mesh: PoolMesh, name: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    request = urllib.request.Request(mesh.url(name) + "/metrics", headers=mesh.headers())
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def phase_count(found: dict[Any, float], phase: str) -> float:
    return found[("sdmesh_deploy_phase_seconds_count", frozenset({("phase", phase)}))]


def test_a_non_shepherd_follows_a_pool_from_submit_to_terminated(pool_mesh: PoolMesh) -> None:
    names = ["e0", "e1"]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=4, memory_mib=1024)
    pool_mesh.wait(
        lambda: all(
            [s for s in pool_mesh.view(n).values() if s == "alive"] == ["alive"] * 2 for n in names
        ),
        30,
        "the two agents never agreed",
    )
    pool = "watched"
    shepherd = shepherd_of(pool, names)
    assert shepherd is not None
    (follower,) = [n for n in names if n != shepherd]
    api = pool_mesh.url(follower)

    cli = subprocess.Popen(
        [sys.executable, "-m", "sdmesh", "events", "--json", "--agent", pool_mesh.agent(follower)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sse_request = urllib.request.Request(
        f"{api}/v1/events", headers={"Accept": "text/event-stream", **pool_mesh.headers()}
    )
    sse_stream = urllib.request.urlopen(sse_request, timeout=60)
    assert sse_stream.headers["Content-Type"] == "text/event-stream"
    lines, sse = Follower(cli.stdout), Follower(sse_stream)
    pool_mesh.wait(
        lambda: metrics(pool_mesh, follower)[("sdmesh_event_followers", frozenset())] == 2,
        10,
        "the followers never connected",
    )

    # Six 256 MiB VMs cannot fit on one 1 GiB host: the follower runs some of them.
    descriptor = pool_file(pool_mesh.root, 6, memory=256, restart="never")
    pool_mesh.cli(follower, "submit", descriptor, "--name", pool, "--wait")
    pool_mesh.wait(  # a Parallel with asynchCreateChild runs before all its children do
        lambda: (
            metrics(pool_mesh, shepherd)[("sdmesh_components", frozenset({("state", "running")}))]
            == 12
        ),
        30,
        "the shepherd never counted the twelve leaves running",
    )
    pool_mesh.wait(  # the follower learns it from gossip
        lambda: (
            metrics(pool_mesh, follower)[("sdmesh_pools", frozenset({("state", "running")}))] == 1
        ),
        10,
        "the follower never counted the pool running",
    )
    pool_mesh.cli(follower, "terminate", pool, "--wait")

    def ours(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e.get("type") == "component" and e.get("pool") == pool]

    def settled() -> bool:
        found = ours(lines.events())
        states = {e["state"] for e in found}
        return "terminated" in states and all(
            e["path"] in {f["path"] for f in found if f["state"] == "terminated"} for e in found
        )

    pool_mesh.wait(settled, 30, f"no terminated events: {lines.lines[-20:]}")
    components = ours(lines.events())
    assert components and {e["host"] for e in components} == {follower}
    keys = {"type", "pool", "path", "kind", "state", "host", "domain", "time"}
    assert all(set(e) == keys for e in components)
    vms = {e["path"]: e["domain"] for e in components if e["domain"]}
    assert 2 <= len(vms) <= 4
    for path in vms:
        states = [e["state"] for e in components if e["path"] == path]
        assert states == [
            "deploying",
            "deployed",
            "starting",
            "running",
            "terminating",
            "terminated",
        ]
        assert next(e["kind"] for e in components if e["path"] == path) == "KvmDomain"
    pools = [e for e in lines.events() if e.get("type") == "pool" and e["pool"] == pool]
    assert [e["state"] for e in pools] == ["deploying", "running", "terminating", "terminated"]
    assert {e["shepherd"] for e in pools} == {shepherd}
    assert pools[-1]["generation"] == 1
    pool_mesh.wait(lambda: len(ours(sse.events())) == len(components), 10, "SSE fell behind")
    assert [e["state"] for e in ours(sse.events())] == [e["state"] for e in components]

    found = metrics(pool_mesh, follower)
    for phase in ("image", "disk", "define", "start", "running"):
        assert phase_count(found, phase) == len(vms), phase
    assert found[("sdmesh_pools", frozenset({("state", "terminated")}))] == 1
    assert found[("sdmesh_members", frozenset({("state", "alive")}))] == 2
    assert (
        found[("sdmesh_gossip_messages_received_total", frozenset({("channel", "datagram")}))] > 0
    )
    assert found[("sdmesh_dht_rpcs_sent_total", frozenset({("message", "request")}))] > 0
    assert found[("sdmesh_events_published_total", frozenset())] >= len(components)

    # Stopping the agent ends both streams at once, and the agent exits cleanly.
    began = time.monotonic()
    pool_mesh.procs[follower].send_signal(signal.SIGTERM)
    assert pool_mesh.procs[follower].wait(timeout=20) == 0
    assert cli.wait(timeout=10) == 1
    assert b"closed the stream" in (cli.stderr.read() if cli.stderr else b"")
    assert time.monotonic() - began < 10
    sse_stream.close()
    log = (Path(pool_mesh.root) / f"{follower}.log").read_text(errors="replace")
    assert "Task was destroyed" not in log and "Traceback" not in log, log[-3000:]
