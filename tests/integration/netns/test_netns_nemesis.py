"""A short seeded nemesis run over five namespace agents (issue 14, item 7).

Two pools of VMs with ``restart "always"``; each round one fault from the seeded schedule
(kill -9 and restart, a host or a pool's shepherd cut off, packet loss, a graceful leave and
rejoin), then its heal. One run serves every test below: each asserts one invariant on what
the sampler and the checker saw. The long run is ``bench/nemesis.py``; its seed is printed,
and so is this one's (``NEMESIS_SEED`` replays it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sdmesh.testing.nemesis import CUTS, FaultKind, RunResult, schedule
from sdmesh.testing.nemesis_run import NemesisMesh, run_nemesis
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

pytestmark = [pytest.mark.root, pytest.mark.slow]

AGENTS = 5
POOLS = {"alpha": 3, "beta": 3}
SEED = int(os.environ.get("NEMESIS_SEED", "1414"))
#: Each kind once, in the seed's order.
KINDS = tuple(FaultKind)
DEADLINE = 60.0


@pytest.fixture(scope="module")
def run(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunResult]:
    testbed = open_testbed(AGENTS, tmp_path_factory)
    mesh = NemesisMesh(testbed)
    try:
        reason = mesh.kind.unavailable()
        if reason:
            pytest.skip(reason)
        mesh.start_all()
        faults = schedule(SEED, len(KINDS), AGENTS, len(POOLS), kinds=KINDS, hold=(9.0, 11.0))
        print(f"nemesis seed {SEED}")
        result = run_nemesis(mesh, faults, POOLS, seed=SEED, deadline=DEADLINE)
        print(result.describe())
        yield result
    finally:
        mesh.close()
        close_testbed(testbed)


def test_each_round_converges_each_vm_once_all_agents_agreeing(run: RunResult) -> None:
    assert len(run.rounds) == len(KINDS)
    assert not run.missed(), run.describe()


def test_no_vm_runs_twice_outside_cuts(run: RunResult) -> None:
    assert run.samples > 10, "the sampler barely looked"
    assert not run.other_overlaps(), run.describe()


def test_no_vm_runs_twice_while_a_host_is_cut_off(run: RunResult) -> None:
    assert any(r.kind in CUTS for r in run.rounds)
    assert not run.cut_overlaps(), run.describe()


def test_terminate_leaves_no_domain_no_volume(run: RunResult) -> None:
    assert not run.leftovers, run.describe()
