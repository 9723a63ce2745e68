"""SWIM's analytical properties, reproduced in simulation (generous bounds; the bench prints
the exact figures)."""

from __future__ import annotations

import math

from sdmesh.sim.experiments import dissemination_times, first_detection_periods, mean

E_OVER_E_MINUS_1 = math.e / (math.e - 1)


def test_first_detection_takes_about_e_over_e_minus_1_periods_whatever_n() -> None:
    means = {}
    for n in (50, 200):
        periods = first_detection_periods(n, trials=40, seed=1)
        assert len(periods) == 40
        assert min(periods) >= 1
        means[n] = mean(periods)
        assert abs(means[n] - E_OVER_E_MINUS_1) < 0.4, means
    # Independent of N: quadrupling the mesh does not move it by much.
    assert abs(means[200] - means[50]) < 0.5


def test_dissemination_grows_logarithmically() -> None:
    rounds = {n: mean(dissemination_times(n, trials=4, seed=2).gossip_rounds) for n in (16, 256)}
    # Sixteen times the members: log2 N doubles (4 -> 8), the time to reach all is far from
    # sixteen-fold, yet it does grow.
    assert rounds[16] < rounds[256] < 3 * rounds[16]
    for n, value in rounds.items():
        assert value < 3 * math.log2(n)
