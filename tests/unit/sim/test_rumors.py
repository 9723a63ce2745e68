"""Rumors across a whole simulated mesh: fast gossip under loss, and anti-entropy for members
that were cut off or down when a rumor was published."""

from __future__ import annotations

import math

import pytest

from sdmesh.membership import Action, Event, Rumor, RumorLearned
from sdmesh.sim import SimNode, Simulator
from sdmesh.sim.experiments import (
    joined_cluster,
    node_name,
    preloaded_cluster,
    rumor_dissemination_times,
)


class Learning:
    """When each node learned each rumor key, and through which kind of event."""

    def __init__(self, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at: dict[str, dict[str, float]] = {}
        self.via: dict[str, dict[str, str]] = {}
        self.values: dict[str, dict[str, Rumor]] = {}
        self._event = ""
        feed = sim.feed

        def recording_feed(node: SimNode, event: Event) -> None:
            self._event = type(event).__name__
            feed(node, event)

        monkeypatch.setattr(sim, "feed", recording_feed)
        sim.listeners.append(self)

    def __call__(self, at: float, node: SimNode, action: Action) -> None:
        if isinstance(action, RumorLearned):
            key = action.rumor.key
            self.at.setdefault(key, {}).setdefault(node.name, at)
            self.via.setdefault(key, {}).setdefault(node.name, self._event)
            self.values.setdefault(key, {})[node.name] = action.rumor


def test_rumor_reaches_all_200_members_at_ten_percent_loss_in_log_n_periods() -> None:
    n = 200
    spread = rumor_dissemination_times(n, trials=5, seed=21, loss=0.10, spacing=3.0)
    assert spread.missed == 0
    # Measured: 1.0 to 1.3 probe periods (0.5 to 0.65 s); SWIM's bound is O(log N).
    assert max(spread.periods) <= math.log2(n)


def test_member_cut_off_during_the_publication_learns_it_by_push_pull_after_the_heal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = preloaded_cluster(60, seed=22)
    learning = Learning(sim, monkeypatch)
    cut = [node_name(i) for i in range(3)]
    sim.run_until(5)
    sim.network.partition([cut])
    sim.run_until(10)
    sim.publish(node_name(30), "tombstones", "pool-7", b"terminated")
    sim.run_until(40)  # long enough for every retransmission to be spent
    reached = learning.at["pool-7"]
    assert set(reached) == {node_name(i) for i in range(3, 60)}
    assert max(reached.values()) < 12
    sim.network.heal()
    sim.run_until(100)
    assert set(cut) <= set(reached)
    first = min(cut, key=lambda name: reached[name])
    assert learning.via["pool-7"][first] == "StreamReceived"
    assert all(reached[name] > 40 for name in cut)
    for name in cut:
        assert sim.nodes[name].core.rumor("tombstones", "pool-7") is not None


def test_member_down_during_the_publication_learns_it_when_it_rejoins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = preloaded_cluster(40, seed=23)
    learning = Learning(sim, monkeypatch)
    down = node_name(7)
    sim.run_until(5)
    sim.crash(down)
    sim.publish(node_name(20), "pools", "pool-3", b"announce v1")
    sim.run_until(30)
    assert down not in learning.at["pool-3"]
    sim.restart(down, join=[sim.nodes[node_name(1)].addr])
    sim.run_until(31)
    assert learning.via["pool-3"][down] == "StreamReceived"  # the join's push-pull reply
    # Having joined, it knows the clock: its own publication wins everywhere.
    sim.publish(down, "pools", "pool-3", b"announce v2")
    sim.run_until(40)
    values = {name: rumor.payload for name, rumor in learning.values["pool-3"].items()}
    assert len(values) == 40 and set(values.values()) == {b"announce v2"}


def test_largest_rumors_travel_the_real_wire_within_the_datagram_budget() -> None:
    sim = joined_cluster(40, seed=24, stagger=0.01, wire=True)
    sim.run_until(sim.now + 5)
    learned: set[tuple[str, str]] = set()
    sim.listeners.append(
        lambda at, node, action: (
            learned.add((node.name, action.rumor.key)) if isinstance(action, RumorLearned) else None
        )
    )
    for index in range(3):
        sim.publish(node_name(index * 10), "t" * 32, f"{index}" * 128, bytes(512))
    sim.run_until(sim.now + 10)
    assert len(learned) == 3 * 40
    assert sim.counters.datagrams_oversize == 0
    assert sim.counters.max_datagram_bytes <= sim.config.max_datagram_bytes
