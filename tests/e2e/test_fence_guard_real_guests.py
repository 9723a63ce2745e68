"""The fence guard on qemu:///system: real QEMU guests run on while the agent's side stops
renewing (an agent killed with kill -9); at the lease's fence time the guard destroys exactly
the guests of fenceable pools, and their QEMU processes are gone; the others run on."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_guests import GuestRun, GuestSpec, list_test_domains, virsh

from sdmesh.ha.guard_client import GuardClient
from sdmesh.ha.guard_wire import boottime
from sdmesh.hypervisor.domain_xml import SDMESH_NS, metadata_xml
from sdmesh.hypervisor.spec import SdmeshMetadata

pytestmark = [pytest.mark.root, pytest.mark.slow]

HASH = "sha256:" + "0" * 64
#: (pool, path) per guest: two in a restartable pool, one whose pool keeps its VMs.
GUESTS = [("e2eha", "web/vm1"), ("e2eha", "web/vm2"), ("e2ekeep", "db/vm")]
FENCEABLE = frozenset({("e2eha", "*")})


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[GuardClient]:
    sock = tmp_path / "guard.sock"
    log = (tmp_path / "guard.log").open("w")
    command = [sys.executable, "-m", "sdmesh.ha.guard_main", "--socket", str(sock)]
    process = subprocess.Popen(
        [*command, "--hypervisor", "qemu:///system", "--tick", "0.05"], stderr=log, stdout=log
    )
    client = GuardClient(sock)
    try:
        deadline = time.monotonic() + 30
        while client.status(0.5) is None:
            assert process.poll() is None, (tmp_path / "guard.log").read_text()
            assert time.monotonic() < deadline, "the guard did not come up"
            time.sleep(0.1)
        yield client
    finally:
        process.terminate()
        process.wait(10)
        client.close()
        log.close()


def test_agent_killed_guard_destroys_the_fenceable_guests(
    guest_run: GuestRun, guard: GuardClient
) -> None:
    names = []
    for i, (pool, path) in enumerate(GUESTS):
        spec = GuestSpec(f"fence{i}", f"10.9.0.{i + 2}", disk=False, nic=False)
        name = guest_run.create(spec)
        # virsh wants the element without its prefix: it adds the namespace itself.
        meta = metadata_xml(SdmeshMetadata(pool, path, 1, HASH))
        meta = meta.replace(f'sdmesh:domain xmlns:sdmesh="{SDMESH_NS}"', "domain")
        meta = meta.replace("</sdmesh:domain>", "</domain>")
        virsh("metadata", name, "--uri", SDMESH_NS, "--key", "sdmesh", "--set", meta, "--live")
        names.append(name)
    pids = {name: qemu_pid(name) for name in names}
    assert all(alive(pid) for pid in pids.values())
    # The agent renews for a while...
    for _ in range(5):
        now = boottime()
        guard.arm(now + 1.0, now + 1.5, FENCEABLE)
        time.sleep(0.3)
    assert set(names) <= set(list_test_domains())
    killed_at = time.monotonic()  # ... and is killed: nobody renews any more.
    fenced = set(names[:2])
    while time.monotonic() - killed_at < 20 and fenced & set(list_test_domains()):
        time.sleep(0.1)
    took = time.monotonic() - killed_at
    print(f"fenced {took:.2f} s after the last renewal (fence time 1.0 s)", file=sys.stderr)
    assert not fenced & set(list_test_domains()), "the fenceable guests still run"
    assert took >= 0.9  # not before the fence time
    assert not any(alive(pids[name]) for name in fenced)
    assert names[2] in list_test_domains() and alive(pids[names[2]])
    status = guard.status()
    assert status is not None and set(status["destroyed"]) == fenced
