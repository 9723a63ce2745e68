"""The nemesis core without a namespace: the schedule is the seed's alone, and the checker
catches overlaps, missing or doubled VMs and disagreeing agents, with when and where."""

from __future__ import annotations

from typing import Any

import pytest

from sdmesh.testing.nemesis import (
    CUTS,
    FaultKind,
    OverlapTracker,
    RoundResult,
    RunResult,
    convergence_problems,
    pool_of,
    schedule,
)


def test_same_seed_same_schedule_and_a_short_run_sees_every_kind() -> None:
    a = schedule(7, 20, 5, 2)
    assert a == schedule(7, 20, 5, 2)
    assert a != schedule(8, 20, 5, 2)
    assert {f.kind for f in a[: len(FaultKind)]} == set(FaultKind)
    assert all(0 <= f.host < 5 and 0 <= f.pool < 2 and 8 <= f.hold <= 14 for f in a)
    assert all(f.loss_percent > 0 for f in a if f.kind is FaultKind.LOSS)
    only = schedule(3, 3, 5, 2, kinds=(FaultKind.CUT_HOST,))
    assert {f.kind for f in only} == {FaultKind.CUT_HOST}


def test_schedule_refuses_an_empty_mesh() -> None:
    with pytest.raises(ValueError):
        schedule(1, 3, 0, 2)


def test_pool_of_reads_the_domain_name() -> None:
    assert pool_of("sdm-alpha-pool-sd0-vm") == "alpha"
    assert pool_of("other") == ""


def test_an_overlap_episode_has_its_hosts_start_end_and_cut_flag() -> None:
    tracker = OverlapTracker()
    d = "sdm-alpha-pool-sd0-vm"
    tracker.observe(1.0, {"h0": [d], "h1": []}, round_=1)
    tracker.observe(2.0, {"h0": [d], "h1": [d]}, cut={"h0"}, round_=1)
    tracker.observe(3.0, {"h0": [d], "h1": [d], "h2": [d]}, cut={"h0"}, round_=1)
    tracker.observe(4.5, {"h0": [], "h1": [d]}, round_=1)
    tracker.observe(5.0, {"h3": [d], "h1": [d]}, round_=2)  # a second episode, no cut
    tracker.close(6.0)
    first, second = tracker.episodes
    assert (first.domain, first.hosts, first.start, first.end) == (d, {"h0", "h1", "h2"}, 2, 4.5)
    assert first.during_cut and first.round == 1 and first.pool == "alpha"
    assert first.duration(99) == 2.5
    assert "h0" in first.describe() and "from 2.0s to 4.5s" in first.describe()
    assert not second.during_cut and second.end == 6.0 and second.round == 2
    assert tracker.samples == 5


def _status(state: str, shepherd: str, gen: int, placed: dict[str, str]) -> dict[str, Any]:
    components = [{"path": d, "domain": d, "host": h} for d, h in placed.items()]
    return {"state": state, "shepherd": shepherd, "generation": gen, "components": components}


def test_converged_when_each_vm_runs_once_where_status_says_and_agents_agree() -> None:
    placed = {"sdm-p-a": "h0", "sdm-p-b": "h1"}
    good = _status("running", "h0", 3, placed)
    domains = {"h0": ["sdm-p-a"], "h1": ["sdm-p-b"], "h2": []}
    assert convergence_problems({"p": 2}, {"h0": {"p": good}, "h1": {"p": good}}, domains) == []


@pytest.mark.parametrize(
    ("statuses", "domains", "expected"),
    [
        (
            {"h1": {"p": _status("running", "h1", 4, {"sdm-p-a": "h0", "sdm-p-b": "h1"})}},
            {"h0": ["sdm-p-a"], "h1": ["sdm-p-b"]},
            "agents disagree",
        ),
        ({}, {"h0": ["sdm-p-a"], "h1": ["sdm-p-a", "sdm-p-b"]}, "VMs on several hosts"),
        ({}, {"h0": ["sdm-p-a"], "h1": []}, "1 of 2 VMs run"),
        ({"h1": {"p": None}}, {"h0": ["sdm-p-a"], "h1": ["sdm-p-b"]}, "no status from ['h1']"),
        ({}, {"h0": ["sdm-p-b"], "h1": ["sdm-p-a"]}, "it is not there"),
    ],
)
def test_each_problem_is_named(
    statuses: dict[str, Any], domains: dict[str, list[str]], expected: str
) -> None:
    base = {"h0": {"p": _status("running", "h0", 3, {"sdm-p-a": "h0", "sdm-p-b": "h1"})}}
    problems = convergence_problems({"p": 2}, {**base, **statuses}, domains)
    assert any(expected in p for p in problems), problems


def test_the_run_table_counts_cut_and_other_overlaps_per_round() -> None:
    tracker = OverlapTracker()
    tracker.observe(0.0, {"h0": ["sdm-p-a"], "h1": ["sdm-p-a"]}, cut={"h1"}, round_=1)
    tracker.observe(1.5, {"h0": ["sdm-p-a"], "h1": []}, round_=1)
    result = RunResult(seed=5, overlaps=tracker.episodes)
    result.rounds = [RoundResult(1, "cut-host h1 for 9s", CUTS[0], 4.2, [], tracker.episodes)]
    result.rounds.append(RoundResult(2, "kill-9+restart h2", FaultKind.KILL_RESTART, None, ["x"]))
    text = result.describe()
    assert text.startswith("seed 5, 2 rounds")
    assert "   4.2          1       0       1.5" in text and "MISS" in text
    assert result.cut_overlaps() and not result.other_overlaps()
    assert [r.number for r in result.missed()] == [2]


def test_a_fault_names_the_host_it_fell_on() -> None:
    cut = schedule(1, 2, 5, 2, kinds=(FaultKind.CUT_SHEPHERD,))[0]
    assert cut.describe("h3", ["alpha", "beta"]).startswith("cut-shepherd h3 of ")
    loss = schedule(1, 1, 5, 2, kinds=(FaultKind.LOSS,))[0]
    assert (
        loss.describe("h2", ["alpha"])
        == f"packet-loss {loss.loss_percent:.0f}% h2 for {loss.hold:.0f}s"
    )
