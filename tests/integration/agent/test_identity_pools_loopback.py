"""Pool records and rumors signed by their writer, on real agents with host identities
(issue 12, item 2): a pool survives the kill -9 of its shepherd, whose successor takes it
over from the record the dead shepherd signed; nothing genuine is refused on the way."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.pools.records import PoolRecord

from .test_authz_loopback import refusals
from .test_identity_loopback import IdentityMesh
from .test_pools_loopback import PoolMesh, pool_file, vm_hosts


class IdentityPoolMesh(PoolMesh, IdentityMesh):
    """Hosts with a test-driver hypervisor, each enrolled under the mesh's CA."""


@pytest.fixture
def idpools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityPoolMesh]:
    mesh = IdentityPoolMesh(tmp_path)
    monkeypatch.setenv("SDMESH_IDENTITY_CA", str(mesh.ca_dir / "ca.pub"))
    try:
        yield mesh
    finally:
        mesh.stop()


def test_a_pool_survives_its_shepherds_kill_with_signed_records(
    idpools: IdentityPoolMesh,
) -> None:
    started = time.monotonic()
    names = ["a", "b", "c"]
    for i, name in enumerate(names):
        idpools.enrol(name)
        idpools.start_host(name, names[0] if i else None, cpus=8, memory_mib=8192)
    idpools.wait(
        lambda: all(len([s for s in idpools.view(n).values() if s == "alive"]) == 3 for n in names),
        30,
        "the agents never agreed",
    )
    idpools.cli("a", "submit", pool_file(idpools.root, 3), "--name", "ha", "--wait")
    shepherd = str(idpools.status("a", "ha")["shepherd"])
    idpools.procs[shepherd].kill()  # kill -9: no hand-over, its signed record is all there is
    alive = [n for n in names if n != shepherd]
    idpools.wait(
        lambda: (
            (s := idpools.status(alive[0], "ha"))["shepherd"] not in ("", shepherd)
            and s["state"] == "running"
            and shepherd not in vm_hosts(s).values()
        ),
        60,
        "the pool never came back to running under a new shepherd",
    )
    # What the dead shepherd stored is signed by it; so is its successor's newer record.
    successor = str(idpools.status(alive[0], "ha")["shepherd"])
    for writer in (shepherd, successor):
        record = PoolRecord.decode((idpools.root / writer / "specs" / "ha.record").read_bytes())
        assert record.writer == writer and record.proof, record
    for name in alive:
        counted = refusals(idpools, name)
        assert counted.get("record", 0) == counted.get("rumor", 0) == 0, (name, counted)
        assert counted.get("tombstone", 0) == 0, (name, counted)
    print(f"taken over from a signed record; whole test {time.monotonic() - started:.1f} s")
