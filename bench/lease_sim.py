"""Lease simulation figures: time from a cut or kill to the lost VMs running elsewhere, and
the overlap count (must be 0), over many seeds, clocks drifting at the assumed bound.

    .venv/bin/python bench/lease_sim.py --nodes 10 --seeds 20 --duration 1800
"""

from __future__ import annotations

import argparse
import statistics
import time

from sdmesh.ha.simulate import SimConfig, SimResult, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--witness", action="store_true")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=1800.0)
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--uniform-rates", action="store_true")
    args = parser.parse_args()
    config = SimConfig(
        nodes=args.nodes,
        witness=args.witness,
        duration=args.duration,
        drift=args.drift,
        extreme_rates=not args.uniform_rates,
    )
    total = SimResult()
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = simulate(config, seed)
        total.faults += result.faults
        total.starts += result.starts
        total.fences += result.fences
        total.overlaps += result.overlaps
        total.rebuild_times += result.rebuild_times
    times = sorted(total.rebuild_times)
    print(
        f"nodes {args.nodes}{' + witness' if args.witness else ''}, seeds "
        f"{args.first_seed}..{args.first_seed + args.seeds - 1}, {args.duration:.0f} s each, "
        f"drift {args.drift:.2%} ({'uniform' if args.uniform_rates else 'extreme'} rates)"
    )
    print(total.summary())
    if len(times) > 1:
        deciles = statistics.quantiles(times, n=10)
        print("rebuild deciles (s): " + " ".join(f"{d:.2f}" for d in deciles))
        print(f"min {times[0]:.2f} s, mean {statistics.fmean(times):.2f} s, max {times[-1]:.2f} s")
    print(f"({time.perf_counter() - started:.1f} s of CPU)")


if __name__ == "__main__":
    main()
