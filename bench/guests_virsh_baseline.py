"""Baseline for pool deployment: N guests started one after another with plain `virsh create`.

Each guest is a transient domain on its own qcow2 overlay, booted from the tiny test guest
(scripts/build-guest); the loop waits for the guest's "SDMESH-GUEST ready" console line before
creating the next one. Prints the time to each guest's console-up and the total, then destroys
everything (not timed). The sdmesh pool benchmark compares against this figure.

Usage (root): python bench/guests_virsh_baseline.py [-n 8] [--burst]
  --burst  create all N back to back, then wait for all consoles (the parallel-ish baseline)
Figures only: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from e2e_guests import GuestRun, GuestSpec, HostNotReady, ensure_host, wait_for_marker


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=8, help="number of guests (default 8)")
    ap.add_argument("--burst", action="store_true", help="create all, then wait for all")
    args = ap.parse_args()
    try:
        image = ensure_host()
    except HostNotReady as e:
        print(f"guests_virsh_baseline: cannot run: {e}", file=sys.stderr)
        return 1
    specs = [
        GuestSpec(f"bench-dom{i}", f"10.0.0.{10 + i}", "255.255.0.0", "10.0.0.1")
        for i in range(1, args.n + 1)
    ]
    run = GuestRun(image, "virshbase")
    mode = "burst" if args.burst else "sequential"
    try:
        t0 = time.monotonic()
        if args.burst:
            names = [run.create(s) for s in specs]
            created = time.monotonic() - t0
            for name in names:
                wait_for_marker(run.console(name))
                print(f"  {name}: console up at {time.monotonic() - t0:6.2f}s")
            print(f"  (all {len(names)} virsh create calls returned after {created:.2f}s)")
        else:
            for spec in specs:
                t = time.monotonic()
                name = run.create(spec)
                wait_for_marker(run.console(name))
                now = time.monotonic()
                print(f"  {name}: {now - t:5.2f}s to console up (at {now - t0:6.2f}s)")
        total = time.monotonic() - t0
    finally:
        t = time.monotonic()
        run.cleanup()
        teardown = time.monotonic() - t
    left = run.leftovers()
    print(
        f"virsh {mode} baseline: {args.n} guests to console-up in {total:.2f}s "
        f"({total / args.n:.2f}s per guest; TCG, {image.boot_kernel.name}); "
        f"teardown {teardown:.2f}s"
    )
    if left:
        print(f"guests_virsh_baseline: left behind: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
