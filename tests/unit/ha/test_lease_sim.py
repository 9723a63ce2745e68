"""Many nodes, random cuts, splits and kills, clocks drifting at the bound: no VM ever
starts on a host while its old host still runs it."""

from __future__ import annotations

import pytest

from sdmesh.ha.simulate import SimConfig, simulate
from sdmesh.ha.timing import LeaseTiming

SEEDS = range(6)


@pytest.mark.parametrize(
    ("nodes", "witness"), [(5, False), (9, False), (4, False), (2, True), (4, True)]
)
def test_no_overlap_for_any_drift_within_the_bound(nodes: int, witness: bool) -> None:
    rebuilds = 0
    for seed in SEEDS:
        result = simulate(SimConfig(nodes=nodes, witness=witness, duration=300.0), seed)
        assert result.overlaps == 0, f"seed {seed}: {result.summary()}"
        rebuilds += len(result.rebuild_times)
        assert all(t < 10.0 for t in result.rebuild_times), result.summary()
    assert rebuilds > 0  # the faults did cost hosts their VMs, and the VMs came back


def test_uniform_rates_too() -> None:
    for seed in SEEDS:
        result = simulate(SimConfig(nodes=7, extreme_rates=False, duration=300.0), seed)
        assert result.overlaps == 0, result.summary()


def test_the_check_has_teeth_clocks_beyond_the_assumed_bound_overlap() -> None:
    """Assume no drift while clocks drift by 25 %: some rebuild comes too early."""
    beyond = SimConfig(nodes=5, duration=600.0, drift=0.25, timing=LeaseTiming(drift=0.0))
    assert sum(simulate(beyond, seed).overlaps for seed in SEEDS) > 0


def test_the_simulation_is_deterministic() -> None:
    config = SimConfig(nodes=5, duration=200.0)
    assert simulate(config, 3).summary() == simulate(config, 3).summary()
