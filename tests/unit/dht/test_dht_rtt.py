"""The adaptive RPC timeout: RFC 6298's estimator, clamped, per contact with a pool-wide guess."""

from __future__ import annotations

import pytest

from sdmesh.dht.rtt import RttConfig, RttEstimator, RttTable

CONFIG = RttConfig(initial=1.0, minimum=0.05, maximum=2.0)


def test_initial_timeout_before_any_sample() -> None:
    assert RttEstimator(CONFIG).timeout() == 1.0


def test_first_sample_sets_srtt_and_half_variance() -> None:
    estimator = RttEstimator(CONFIG)
    estimator.sample(0.2)
    assert estimator.srtt == pytest.approx(0.2)
    assert estimator.rttvar == pytest.approx(0.1)
    assert estimator.timeout() == pytest.approx(0.2 + 4 * 0.1)


def test_subsequent_samples_follow_jacobson_karels() -> None:
    estimator = RttEstimator(CONFIG)
    estimator.sample(0.2)
    estimator.sample(0.4)
    # RTTVAR = 3/4 * 0.1 + 1/4 * |0.2 - 0.4|; SRTT = 7/8 * 0.2 + 1/8 * 0.4
    assert estimator.rttvar == pytest.approx(0.125)
    assert estimator.srtt == pytest.approx(0.225)
    assert estimator.timeout() == pytest.approx(0.225 + 0.5)


def test_steady_fast_peer_converges_to_the_minimum_clamp() -> None:
    estimator = RttEstimator(CONFIG)
    for _ in range(100):
        estimator.sample(0.001)
    assert estimator.timeout() == CONFIG.minimum


def test_slow_peer_is_clamped_to_the_maximum() -> None:
    estimator = RttEstimator(CONFIG)
    estimator.sample(5.0)
    assert estimator.timeout() == CONFIG.maximum


def test_a_spike_raises_the_timeout_then_it_decays() -> None:
    estimator = RttEstimator(CONFIG)
    for _ in range(50):
        estimator.sample(0.02)
    calm = estimator.timeout()
    estimator.sample(0.3)
    spiked = estimator.timeout()
    assert spiked > calm
    for _ in range(50):
        estimator.sample(0.02)
    assert estimator.timeout() < spiked


def test_negative_clock_noise_counts_as_zero() -> None:
    estimator = RttEstimator(CONFIG)
    estimator.sample(-0.5)
    assert estimator.srtt == 0.0
    assert estimator.timeout() == CONFIG.minimum


def test_unmeasured_contact_gets_the_pool_wide_estimate() -> None:
    table = RttTable(CONFIG)
    assert table.timeout_for(("10.0.0.9", 1)) == CONFIG.initial
    for port in range(10):
        table.sample(("10.0.0.1", port), 0.004)
    assert table.timeout_for(("10.0.0.9", 1)) == pytest.approx(table.overall.timeout())
    assert table.timeout_for(("10.0.0.9", 1)) < CONFIG.initial


def test_each_contact_keeps_its_own_estimate() -> None:
    table = RttTable(CONFIG)
    for _ in range(20):
        table.sample("near", 0.001)
        table.sample("far", 0.4)
    assert table.timeout_for("near") == CONFIG.minimum
    assert table.timeout_for("far") > 0.4


def test_table_is_bounded_least_recently_used_first() -> None:
    table = RttTable(CONFIG, max_contacts=2)
    table.sample("a", 0.1)
    table.sample("b", 0.1)
    table.sample("a", 0.1)
    table.sample("c", 0.1)
    assert len(table) == 2
    assert table.estimator("b") is None
    assert table.estimator("a") is not None


@pytest.mark.parametrize(
    "kwargs", [{"minimum": 0.0}, {"minimum": 3.0, "maximum": 2.0}, {"gain": 0.0}, {"gain": 2.0}]
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RttConfig(**kwargs)
