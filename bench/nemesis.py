"""The long randomized fault run: seeded faults on network-namespace agents, the invariants
checked throughout from every agent's API (issue 14, item 7). Needs root.

    sudo .venv/bin/python bench/nemesis.py --seed 1414 --rounds 20

Prints the seed first (a run is replayed by giving it again), then one row per round: the
fault, the time from its heal to converged (every VM once, every agent agreeing on state,
shepherd and generation), the overlap episodes begun in that round (with a host cut off, and
otherwise) and the longest; then every overlap and what terminate left. Exits 1 on any
violation.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

from sdmesh.testing.nemesis import TABLE_HEADER, FaultKind, RoundResult, schedule
from sdmesh.testing.nemesis_run import NemesisMesh, run_nemesis, trusted_operator_env
from sdmesh.testing.netns import Testbed, reap_stale, skip_reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--vms", type=int, default=3, help="VMs in each of the two pools")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds to converge")
    parser.add_argument(
        "--kinds",
        default=",".join(FaultKind),
        help=f"comma-separated fault kinds among {', '.join(FaultKind)}",
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    print(f"seed {seed}", flush=True)
    reason = skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    try:
        kinds = [FaultKind(kind.strip()) for kind in args.kinds.split(",")]
    except ValueError as error:
        parser.error(str(error))
    pools = {"alpha": args.vms, "beta": args.vms}
    faults = schedule(seed, args.rounds, args.agents, len(pools), kinds=kinds)
    reap_stale()
    with tempfile.TemporaryDirectory(prefix="sdmesh-nemesis-") as work:
        trusted_operator_env(Path(work))
        with Testbed(args.agents, workdir=Path(work) / "hosts") as testbed:
            mesh = NemesisMesh(testbed)
            try:
                mesh.start_all()
                print(TABLE_HEADER, flush=True)

                def show(row: RoundResult) -> None:
                    print(row.row(), flush=True)

                result = run_nemesis(
                    mesh, faults, pools, seed=seed, deadline=args.deadline, on_round=show
                )
            finally:
                mesh.close()
    print(result.describe())
    violations = len(result.overlaps) + len(result.missed()) + len(result.leftovers)
    print(
        f"seed {seed}: {violations} violations ({len(result.cut_overlaps())} overlaps with a "
        f"host cut off, {len(result.other_overlaps())} other overlaps, "
        f"{len(result.missed())} rounds not converged, {len(result.leftovers)} left after "
        "terminate)"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
