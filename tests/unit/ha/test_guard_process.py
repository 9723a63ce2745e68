"""The fence guard as a real process on libvirt's test driver: when the agent's side stops
renewing, it destroys exactly the fenceable sdmesh domains; disarmed, it destroys nothing."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdmesh.ha.guard_client import GuardClient
from sdmesh.ha.guard_wire import boottime
from sdmesh.hypervisor.domain_xml import metadata_element
from sdmesh.hypervisor.simulated_host import simulated_host_xml
from sdmesh.hypervisor.spec import SdmeshMetadata

HASH = "sha256:" + "0" * 64
DOMAINS = {
    "ha-web-1": ("ha", "web/vm1"),  # a restartable pool: fenceable
    "ha-web-2": ("ha", "web/vm2"),
    "mixed-db": ("mixed", "db"),  # fenceable component of a mixed pool
    "mixed-keep": ("mixed", "cache"),  # isolation "keep": stays
    "batch-1": ("batch", "vm"),  # restart "never": stays
    "not-ours": None,  # no sdmesh metadata: never touched
}
FENCEABLE = frozenset({("ha", "*"), ("mixed", "db")})


def host_file(path: Path) -> str:
    node = ET.fromstring(simulated_host_xml(cpus=8, memory_mib=8192))
    for name, meta in DOMAINS.items():
        domain = ET.SubElement(node, "domain", type="test")
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "memory").text = "65536"
        ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
        if meta is not None:
            element = metadata_element(SdmeshMetadata(meta[0], meta[1], 1, HASH))
            ET.SubElement(domain, "metadata").append(element)
    path.write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{path}"


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[GuardClient]:
    uri = host_file(tmp_path / "host.xml")
    sock = tmp_path / "g.sock"
    command = [sys.executable, "-m", "sdmesh.ha.guard_main", "--socket", str(sock)]
    log = (tmp_path / "guard.log").open("w")
    process = subprocess.Popen(
        [*command, "--hypervisor", uri, "--tick", "0.05"], stderr=log, stdout=log
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


def status_of(client: GuardClient) -> dict[str, Any]:
    status = client.status()
    assert status is not None
    return status


def running(client: GuardClient) -> set[str]:
    return {entry[0] for entry in status_of(client)["running"]}


def test_agent_stops_renewing_guard_destroys_exactly_the_fenceable(guard: GuardClient) -> None:
    assert running(guard) == set(DOMAINS) - {"not-ours"}
    for renewal in range(5):  # the agent renews: nothing happens
        now = boottime()
        if renewal == 2:  # before a start, the agent waits for the guard to confirm the arm
            assert guard.arm_confirmed(now + 0.6, now + 1.0, FENCEABLE, timeout=2.0)
        else:
            assert guard.arm(now + 0.6, now + 1.0, FENCEABLE)
        time.sleep(0.2)
    assert running(guard) == set(DOMAINS) - {"not-ours"}
    # The agent is "killed": no more renewals. The guard fences at the last deadline.
    time.sleep(1.5)
    status = status_of(guard)
    assert status["mode"] == "fenced"
    assert set(status["destroyed"]) == {"ha-web-1", "ha-web-2", "mixed-db"}
    assert running(guard) == {"mixed-keep", "batch-1"}


def test_a_planned_stop_disarms_and_nothing_is_fenced(guard: GuardClient) -> None:
    now = boottime()
    guard.arm(now + 0.5, now + 0.8, FENCEABLE)
    guard.disarm("planned restart")
    time.sleep(1.2)
    status = status_of(guard)
    assert status["mode"] == "disarmed" and status["destroyed"] == []
    assert running(guard) == set(DOMAINS) - {"not-ours"}
