"""Issue 12, item 2 on real agents: a client holding the cluster key sends ``terminate``
unsigned (at the generation every host knows) and with generations 2^62 and 2^64-1 (and orders
naming itself shepherd) to every host of a running pool. Nothing changes: the pool keeps
running, each refusal is answered and counted, and the pool can still be terminated (no HTTP
500, no overflow)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from sdmesh.transport import StreamClient, TransportSecurity

from .test_pools_loopback import DESCRIPTORS, PoolMesh


def refusals(mesh: PoolMesh, name: str) -> dict[str, float]:
    request = urllib.request.Request(mesh.url(name) + "/metrics", headers=mesh.headers())
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sdmesh_mesh_refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


def test_forged_terminations_and_orders_change_nothing(pool_mesh: PoolMesh) -> None:
    names = ["a", "b", "c"]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=8, memory_mib=8192)
    pool_mesh.wait(
        lambda: all(
            len([s for s in pool_mesh.view(n).values() if s == "alive"]) == 3 for n in names
        ),
        30,
        "the agents never agreed",
    )
    demo = str(DESCRIPTORS / "examples" / "demoPool.sf")
    done = pool_mesh.cli("a", "submit", demo, "--name", "demo", "--wait")
    assert "pool demo running" in done.stdout
    security = TransportSecurity.from_key_file(pool_mesh.key)

    async def forge() -> list[object]:
        replies: list[object] = []
        for name in names:
            address = ("127.0.0.1", pool_mesh.ports[name][0])
            client = StreamClient(security, identity="mallory")
            client.peers.introduce(address, name)
            # Unsigned: refused even at the generation every host knows (deny by default,
            # no tombstone signed on mallory's behalf); huge ones are out of bounds anyway.
            for generation in (1, 2**62, 2**64 - 1):
                request = {"rpc": "terminate", "pool": "demo", "generation": generation}
                replies.append(await client.request(address, request, timeout=5))
            order = ["demo", 99, "mallory", "0" * 64, "sfConfig", "terminate", "sfConfig", 0, 0]
            replies.append(
                await client.request(address, {"rpc": "orders", "orders": [order]}, timeout=5)
            )
        return replies

    replies = asyncio.run(forge())
    for i in range(0, len(replies), 4):
        assert [r["ok"] for r in replies[i : i + 3]] == [False] * 3, replies  # type: ignore[index]
        assert replies[i + 3]["answers"][0][0] == "unreachable", replies[i + 3]  # type: ignore[index]
    time.sleep(6)  # past the tombstone grace (5 s): a tombstone applied would have torn down by now
    statuses = [pool_mesh.status(name, "demo") for name in names]
    assert {s["state"] for s in statuses} == {"running"}, statuses
    for name in names:
        counted = refusals(pool_mesh, name)
        assert counted.get("tombstone", 0) >= 3, counted
        # mallory is no member: its stream cannot come from the shepherd it names
        assert counted.get("wrong_sender", 0) >= 1, counted
    pool_mesh.cli("b", "terminate", "demo", "--wait")  # the name is not poisoned
    again = pool_mesh.cli("c", "submit", demo, "--name", "demo", "--wait")
    assert "pool demo running" in again.stdout
    assert json.dumps(pool_mesh.status("a", "demo")["state"]) == '"running"'
