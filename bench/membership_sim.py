"""Membership figures from the deterministic simulator (SWIM + Lifeguard cores).

Run: .venv/bin/python bench/membership_sim.py [--quick]

Columns:
  first det.   mean protocol periods (and its standard error) until some member first
               suspects a crashed one, periods aligned as in SWIM's model; SWIM predicts
               1/(1-(1-1/(N-1))^(N-1)), about e/(e-1) = 1.58 whatever N (round-robin target
               selection makes it slightly shorter for very small N: 1.48 at N = 10)
  all dead     seconds until every member has marked a crashed member failed (random probe
               phases, as in real life): mean / max; Serf's LAN profile for reference
  dissem.      time for a metadata update to reach every member: seconds, probe periods and
               gossip rounds with gossip on; probe periods with piggybacking only (pure SWIM)
  FP @10%      false failure verdicts (any member about any member) / suspicions raised by
               failed probes, with 10% datagram loss and every node up
Figures are simulated time; only the last column is wall-clock.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass

from sdmesh.membership import MembershipConfig
from sdmesh.sim.experiments import (
    dissemination_times,
    false_positive_run,
    first_detection_periods,
    full_detection_times,
    mean,
)

SERF_LAN_ALL_DEAD = {10: 5.7, 30: 7.2, 60: 9.2}
"""Seconds for every member to notice a kill -9 with Serf's LAN profile."""


@dataclass(frozen=True)
class Plan:
    n: int
    detection_trials: int
    kill_trials: int
    update_trials: int
    loss_seconds: float


FULL = [
    Plan(10, 200, 10, 8, 600),
    Plan(30, 200, 10, 8, 600),
    Plan(50, 200, 10, 8, 600),
    Plan(60, 200, 10, 8, 600),
    Plan(200, 100, 5, 6, 120),
    Plan(800, 48, 3, 4, 30),
]
QUICK = [Plan(10, 30, 4, 4, 120), Plan(50, 30, 4, 4, 120), Plan(200, 30, 2, 3, 30)]


def stderr(values: list[int]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def swim_expectation(n: int) -> float:
    return 1 / (1 - (1 - 1 / (n - 1)) ** (n - 1))


def row(plan: Plan, seed: int) -> str:
    started = time.perf_counter()
    periods = first_detection_periods(plan.n, trials=plan.detection_trials, seed=seed)
    kills = full_detection_times(plan.n, trials=plan.kill_trials, seed=seed)
    gossip = dissemination_times(plan.n, trials=plan.update_trials, seed=seed)
    piggyback = dissemination_times(plan.n, trials=plan.update_trials, seed=seed, gossip=False)
    loss = false_positive_run(plan.n, loss=0.10, duration=plan.loss_seconds, seed=seed)
    wall = time.perf_counter() - started
    serf = SERF_LAN_ALL_DEAD.get(plan.n)
    cells = [
        f"{plan.n:>5}",
        f"{mean(periods):4.2f}±{stderr(periods):4.2f} ({swim_expectation(plan.n):4.2f})",
        f"{mean(kills.all_failed):5.1f} / {max(kills.all_failed, default=math.nan):4.1f}",
        f"{serf:5.1f}" if serf else f"{'-':>5}",
        f"{mean(gossip.seconds):5.2f}",
        f"{mean(gossip.periods):5.1f}",
        f"{mean(gossip.gossip_rounds):5.1f}",
        f"{math.log2(plan.n):5.1f}",
        f"{mean(piggyback.periods):6.1f}",
        f"{loss.false_failures:>5} / {loss.suspicions_raised:<5}",
        f"{plan.loss_seconds:>4.0f}s",
        f"{wall:7.1f}",
    ]
    return " ".join(cells)


HEADER = (
    f"{'':24}{'all dead (s)':^13}{'':6}{'dissemination':^24}{'':7}{'FP @10% loss':^18}\n"
    f"{'N':>5} {'first det. (SWIM)':<17} {'mean /  max':>12} {'Serf':>5} {'s':>5} {'per.':>5}"
    f" {'rnds':>5} {'log2N':>5} {'pb-per':>6} {'false / susp':<13} {'time':>5} {'wall(s)':>7}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and trials")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cfg = MembershipConfig()
    print(
        f"probe {cfg.probe_interval}s/{cfg.probe_timeout}s, {cfg.indirect_checks} relays,"
        f" suspicion {cfg.suspicion_mult:g}..{cfg.suspicion_mult * cfg.suspicion_max_mult:g}"
        f" x log10(N) periods (k={cfg.suspicion_confirmations}),"
        f" retransmit {cfg.retransmit_mult} x log10(N), gossip to {cfg.gossip_nodes}"
        f" every {cfg.gossip_interval}s"
    )
    print(HEADER)
    total = time.perf_counter()
    for plan in QUICK if args.quick else FULL:
        print(row(plan, args.seed))
        sys.stdout.flush()
    print(f"total wall time {time.perf_counter() - total:.1f}s")


if __name__ == "__main__":
    main()
