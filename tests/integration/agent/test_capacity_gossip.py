"""Each agent tells the mesh what its VMs hold: placement reads free memory from gossip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_pools_loopback import PoolMesh, pool_file


@pytest.fixture
def pool_mesh(tmp_path: Path) -> Iterator[PoolMesh]:
    mesh = PoolMesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop()


def committed(mesh: PoolMesh, observer: str) -> dict[str, int]:
    """Committed memory of every member, as ``observer``'s view tells it."""
    peers = mesh.api(observer, "/v1/peers")
    assert isinstance(peers, list)
    return {
        str(p["name"]): int(p["meta"].get("capacity", {}).get("memory_committed_mib") or 0)
        for p in peers
    }


def test_committed_memory_reaches_every_member_and_goes_back(pool_mesh: PoolMesh) -> None:
    names = ["c0", "c1", "c2"]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=4, memory_mib=4096)
    pool_mesh.wait(
        lambda: all(len(committed(pool_mesh, n)) == 3 for n in names), 30, "no full view"
    )
    descriptor = pool_file(pool_mesh.root, 3, memory=512)
    pool_mesh.cli("c0", "submit", descriptor, "--name", "cap", "--wait")
    # Three 512 MiB VMs spread over three hosts: every view shows 512 MiB committed on each.
    pool_mesh.wait(
        lambda: all(set(committed(pool_mesh, n).values()) == {512} for n in names),
        20,
        "committed memory never reached every view",
    )
    pool_mesh.cli("c2", "terminate", "cap", "--wait")
    pool_mesh.wait(
        lambda: all(set(committed(pool_mesh, n).values()) == {0} for n in names),
        20,
        "released memory never reached every view",
    )
