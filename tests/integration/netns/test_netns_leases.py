"""Leases between real agents in network namespaces: two hosts and a witness. Cut one host
off from the other and the witness: it loses its lease (and would stop its restartable
VMs), the host that still reaches the witness keeps its lease; healed, it renews again."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.testing.agents import SdmeshAgent, all_alive, new_key, wait_answering, wait_views
from sdmesh.testing.netns import Proc, Testbed
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

pytestmark = [pytest.mark.root, pytest.mark.slow]
HELD = "lease held"
LOST = "lease lost"


@pytest.fixture
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    bed = open_testbed(3, tmp_path_factory)
    try:
        yield bed
    finally:
        close_testbed(bed)


def wait_log(proc: Proc, text: str, count: int = 1, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while proc.log().count(text) < count:
        assert proc.alive(), proc.log()[-3000:]
        assert time.monotonic() - started < timeout, f"no {text!r} in:\n{proc.log()[-3000:]}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_the_host_that_reaches_the_witness_keeps_its_lease(
    testbed: Testbed, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('leases = true\nfence-guard-socket = ""\n')
    key = new_key()
    common = ["--config", str(config), "--log-level", "info"]
    hosts = SdmeshAgent(testbed, key=key, extra_args=common)
    witnesses = SdmeshAgent(testbed, key=key, extra_args=[*common, "--witness"])
    h1, h2, w = testbed.hosts
    p1 = hosts.start(h1, [])
    wait_answering(hosts, [h1], timeout=30)
    p2 = hosts.start(h2, [h1])
    pw = witnesses.start(w, [h1])
    names = [h.name for h in (h1, h2, w)]
    assert wait_views(hosts, [h1, h2, w], all_alive(names), timeout=60).complete
    for proc in (p1, p2, pw):
        wait_log(proc, HELD)
    lost_before = p1.log().count(LOST), p2.log().count(LOST)
    testbed.partition([h1, w], [h2])
    took = wait_log(p2, LOST, lost_before[1] + 1, timeout=20)
    print(f"h2 lost its lease {took:.2f} s after the cut", file=sys.stderr)
    assert took < 9.0, f"h2 lost its lease {took:.1f} s after the cut (timeout 6 s)"
    time.sleep(3.0)  # h1 still holds its lease (h1 and the witness: 2 of 3)
    assert p1.log().count(LOST) == lost_before[0], p1.log()[-3000:]
    held_before = p2.log().count(HELD)
    testbed.heal_partitions()
    wait_log(p2, HELD, held_before + 1, timeout=30)
