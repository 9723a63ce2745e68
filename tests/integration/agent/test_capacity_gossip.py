"""Each agent tells the mesh what its VMs hold: placement reads free memory and free disk from
gossip."""

from __future__ import annotations

import json
import re

from .test_pools_loopback import PoolMesh, pool_file


def committed(mesh: PoolMesh, observer: str) -> dict[str, int]:
    """Committed memory of every member, as ``observer``'s view tells it."""
    peers = mesh.api(observer, "/v1/peers")
    assert isinstance(peers, list)
    return {
        str(p["name"]): int(p["meta"].get("capacity", {}).get("memory_committed_mib") or 0)
        for p in peers
    }


def disk_free(mesh: PoolMesh, observer: str) -> dict[str, int]:
    """Free disk of every member, as ``observer``'s view tells it (0: not said)."""
    peers = mesh.api(observer, "/v1/peers")
    assert isinstance(peers, list)
    return {
        str(p["name"]): int(p["meta"].get("capacity", {}).get("disk_free_mib") or 0) for p in peers
    }


def test_committed_memory_reaches_every_member_and_goes_back(pool_mesh: PoolMesh) -> None:
    names = ["c0", "c1", "c2"]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=4, memory_mib=4096)
    pool_mesh.wait(
        lambda: all(len(committed(pool_mesh, n)) == 3 for n in names), 30, "no full view"
    )
    pool_mesh.wait(
        lambda: all(min(disk_free(pool_mesh, n).values()) > 0 for n in names),
        20,
        "free disk never reached every view",
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


def test_a_dry_run_reports_disks_larger_than_any_host_has_free(pool_mesh: PoolMesh) -> None:
    names = ["d0", "d1"]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=4, memory_mib=4096)
    pool_mesh.wait(
        lambda: all(len(disk_free(pool_mesh, n)) == 2 for n in names), 30, "no full view"
    )
    pool_mesh.wait(
        lambda: min(disk_free(pool_mesh, "d1").values()) > 0, 20, "no free disk in d1's view"
    )
    descriptor = pool_mesh.root / "huge.sf"
    descriptor.write_text(
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        "sfConfig extends Compound {\n"
        '    big extends Qcow2OverlayBackend { baseImage "/img/base.qcow2"; size "1000T"; }\n'
        "    vm extends KvmDomain { memory 256; storageBackend LAZY ATTRIB big; }\n"
        '    small extends Qcow2OverlayBackend { baseImage "/img/base.qcow2"; }\n'
        "    vm2 extends KvmDomain { memory 256; storageBackend LAZY ATTRIB small; }\n"
        "}\n"
    )
    done = pool_mesh.cli("d1", "submit", str(descriptor), "--dry-run", "--json", check=False)
    assert done.returncode != 0  # something is unplaced
    plan = json.loads(done.stdout)
    placement = {item["path"]: item for item in plan["placement"]}
    assert placement["sfConfig:vm"]["host"] is None
    assert placement["sfConfig:vm"]["disk_mib"] == 1000 << 20
    assert placement["sfConfig:vm2"]["host"] in names  # no declared size: no disk check
    (unplaced,) = plan["unplaced"]
    assert unplaced["path"] == "sfConfig:vm"
    # Each host named with the figures (its free disk as gossiped: it may move meanwhile).
    one = rf"{{}} needs {1000 << 20} MiB of disk, \d+ MiB free"
    shown = "; ".join(one.format(n) for n in names)
    assert re.fullmatch(rf"fits on no host \({shown}\)", unplaced["reason"]), unplaced["reason"]
    assert all(pool_mesh.domains(n) == [] for n in names)  # a dry run creates nothing
