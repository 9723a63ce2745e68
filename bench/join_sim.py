"""Mass join in the deterministic simulator: the protocol's own join time, start-up aside.

Run: .venv/bin/python bench/join_sim.py [--sizes 10,30,60] [--runs 10] [--loss 0,0.1]

On real processes (bench/mesh_join_failure.py) an N-agent mass join on 2 cores is bounded by
N Python interpreters starting at once. Here the same membership cores run in the simulator
(simulated time, a LAN: 0.5 ms datagrams, 2 ms streams): node 0 starts, then the N-1
others join through it, all at the same instant or --stagger seconds apart. Figures: seconds
of simulated time from the last join until every node sees every other alive (mean, max
over --runs seeds), and runs that still had a hole after 60 s.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

from sdmesh.sim.experiments import joined_cluster, view_holes
from sdmesh.sim.network import NetworkConfig

STEP = 0.01
HOLE_LIMIT = 60.0


def converge(n: int, seed: int, loss: float, stagger: float) -> float | None:
    """Simulated seconds from the last join until no view has a hole (None: one at 60 s)."""
    sim = joined_cluster(n, seed=seed, stagger=stagger, network=NetworkConfig(loss=loss))
    start = sim.now
    while sim.now - start < HOLE_LIMIT:
        sim.run_until(sim.now + STEP)
        if view_holes(sim) == 0 and len(sim.running_nodes()) == n:
            return sim.now - start
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10,30,60")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--loss", default="0,0.1", help="datagram loss rates (default 0,0.1)")
    ap.add_argument(
        "--stagger",
        default="0,0.02",
        help="seconds between two joiners (default 0,0.02: all at once, and N-1 joins over "
        "(N-1)*0.02 s, as processes that start together come up)",
    )
    args = ap.parse_args()
    print(
        f"{'N':>4} {'stagger':>7} {'loss':>5}  {'join s: mean':>12} {'max':>6}  "
        f"holes after {HOLE_LIMIT:.0f} s"
    )
    for n, stagger, loss in itertools.product(
        (int(x) for x in args.sizes.split(",")),
        [float(x) for x in args.stagger.split(",")],
        [float(x) for x in args.loss.split(",")],
    ):
        times = [converge(n, seed, loss, stagger) for seed in range(args.runs)]
        done = [t for t in times if t is not None]
        holes = len(times) - len(done)
        mean = f"{statistics.fmean(done):.2f}" if done else "-"
        worst = f"{max(done):.2f}" if done else "-"
        print(f"{n:>4} {stagger:>7} {loss:>5.0%}  {mean:>12} {worst:>6}  {holes}/{len(times)}")
    print("Serf on real processes (issue #4, LAN profile): 0.26 / 0.70 / 1.31 s at N = 10/30/60.")


if __name__ == "__main__":
    main()
