"""Tuning formulas and configuration validation."""

from __future__ import annotations

import itertools
import math

import pytest

from sdmesh.membership import MembershipConfig
from sdmesh.membership.config import push_pull_period, suspicion_bounds, suspicion_timeout
from sdmesh.membership.health import LocalHealth
from sdmesh.membership.suspicion import Suspicion
from sdmesh.transport.seal import OVERHEAD
from sdmesh.transport.stream import DEFAULT_MAX_FRAME


def test_suspicion_bounds_scale_with_log_n() -> None:
    config = MembershipConfig(probe_interval=0.5, suspicion_mult=4, suspicion_max_mult=6)
    assert suspicion_bounds(config, 5) == (2.0, 12.0)
    low, high = suspicion_bounds(config, 100)
    assert low == pytest.approx(4.0)
    assert high == pytest.approx(24.0)


def test_suspicion_timeout_shrinks_logarithmically_to_the_minimum() -> None:
    timeouts = [suspicion_timeout(2.0, 12.0, 3, c) for c in range(5)]
    assert timeouts[0] == 12.0
    assert timeouts[1] == pytest.approx(12.0 - 10.0 * math.log(2) / math.log(4))
    assert timeouts[3] == timeouts[4] == 2.0
    # The first confirmation buys the biggest reduction.
    steps = [a - b for a, b in itertools.pairwise(timeouts)][:3]
    assert steps == sorted(steps, reverse=True)


def test_no_expected_confirmations_means_minimum_timeout() -> None:
    assert suspicion_timeout(2.0, 12.0, 0, 0) == 2.0


def test_suspicion_counts_each_confirmer_once() -> None:
    suspicion = Suspicion(10.0, 2.0, 12.0, expected=2, origin="a")
    assert suspicion.deadline == 22.0
    assert not suspicion.confirm("a")
    assert suspicion.confirm("b")
    assert not suspicion.confirm("b")
    assert suspicion.confirm("c")
    assert suspicion.deadline == 12.0
    assert not suspicion.confirm("d")
    assert suspicion.confirmations == 2


def test_push_pull_period_stretches_beyond_32_members() -> None:
    assert push_pull_period(15, 10) == 15
    assert push_pull_period(15, 32) == 15
    assert push_pull_period(15, 33) == 30
    assert push_pull_period(15, 64) == 30
    assert push_pull_period(15, 1000) == 15 * 6


def test_local_health_saturates() -> None:
    health = LocalHealth(maximum=8)
    health.apply(-1)
    assert health.score == 0 and health.multiplier == 1
    health.apply(20)
    assert health.score == 8 and health.multiplier == 9


@pytest.mark.parametrize(
    "changes",
    [
        {"probe_interval": 0.3, "probe_timeout": 0.2},
        {"probe_timeout": 0},
        {"relay_nack_fraction": 1.5},
        {"suspicion_max_mult": 0.5},
        {"retransmit_mult": 0},
        {"max_datagram_bytes": 100},
        {"indirect_checks": -1},
        {"max_stream_bytes": 1000},
        {"max_rumors": 0},
        {"rumor_ttl": 0},
    ],
)
def test_inconsistent_configs_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MembershipConfig(**changes)  # type: ignore[arg-type]


def test_push_pull_budget_fits_the_stream_transport_frame() -> None:
    """Push-pull is sealed into one stream frame; its budget must leave room for the seal."""
    assert MembershipConfig().max_stream_bytes <= DEFAULT_MAX_FRAME - OVERHEAD
