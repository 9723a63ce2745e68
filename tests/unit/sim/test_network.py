"""The simulated network on its own: loss, partitions, latency."""

from __future__ import annotations

import random

import pytest

from sdmesh.sim import Network, NetworkConfig


def test_global_and_per_link_loss() -> None:
    network = Network(NetworkConfig(loss=0.1), random.Random(1))
    delivered = sum(network.delivers("a", "b") for _ in range(20_000))
    assert delivered / 20_000 == pytest.approx(0.9, abs=0.01)
    network.set_link_loss("a", "b", 1.0)
    assert not any(network.delivers("a", "b") for _ in range(100))
    assert any(network.delivers("b", "a") for _ in range(100))


def test_partitions_cut_groups_apart_until_healed() -> None:
    network = Network(NetworkConfig(), random.Random(1))
    network.partition([["a", "b"], ["c"]])
    assert network.delivers("a", "b")
    assert not network.delivers("a", "c")
    assert not network.connected("c", "b")
    assert not network.delivers("d", "a")  # unlisted nodes form their own group
    network.heal()
    assert network.delivers("a", "c")


def test_latency_stays_within_jitter_and_links_can_differ() -> None:
    config = NetworkConfig(latency=0.001, jitter=0.0005)
    network = Network(config, random.Random(1))
    delays = [network.delay("a", "b") for _ in range(1000)]
    assert min(delays) >= 0.001 and max(delays) <= 0.0015
    network.set_link_latency("a", "b", 0.050)
    assert 0.050 <= network.delay("a", "b") <= 0.0505
    assert network.delay("b", "a") <= 0.0015
