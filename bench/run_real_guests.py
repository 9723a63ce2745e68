"""8 real guests to console-up: ``sdmesh run`` against a sequential ``virsh create`` loop.

Both sides in the same run, on qemu:///system with the tiny test guest (scripts/build-guest),
TCG, each guest on a qcow2 overlay of the same base image. Baseline: bench/guests_virsh_baseline.py
(create one guest, wait for its "SDMESH-GUEST ready" console line, then the next). sdmesh: a
pool descriptor (a Parallel with asynchCreateChild of N smart domains, disk + VM each) run by
``sdmesh run``; timed from the command's start until every console shows the marker, then
terminated with SIGINT (teardown timed separately). Needs root.

    .venv/bin/python bench/run_real_guests.py [-n 8]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from e2e_guests import HostNotReady, ensure_host

MARKER = "SDMESH-GUEST ready"


def descriptor(count: int) -> str:
    domains = "\n".join(
        f"        sd{i} extends Compound {{ sfSyncTerminate true; "
        f"disk extends Qcow2OverlayBackend {{ baseImage PROPERTY guest.base; }} "
        f'vm extends Guest {{ hostname "bench-dom{i}"; ip "10.0.0.{10 + i}"; '
        f"storageBackend LAZY ATTRIB disk; }} }}"
        for i in range(1, count + 1)
    )
    return (
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        "Guest extends KvmDomain { kernel PROPERTY guest.kernel; initrd PROPERTY guest.initrd; "
        'cmdline "console=ttyS0 quiet loglevel=3"; netmask "255.255.0.0"; '
        'gateway "10.0.0.1"; memory 128; }\n'
        "sfConfig extends Compound {\n    pool extends VirtualPool {\n" + domains + "\n    }\n}\n"
    )


def baseline(count: int) -> float:
    script = Path(__file__).with_name("guests_virsh_baseline.py")
    out = subprocess.run(
        [sys.executable, str(script), "-n", str(count)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"console-up in ([0-9.]+)s", out)
    assert found, out
    return float(found.group(1))


def sdmesh(count: int) -> tuple[float, float]:
    image = ensure_host()
    state = Path("/var/lib/sdmesh/bench") / uuid.uuid4().hex[:8]
    state.mkdir(parents=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sf", delete=False) as handle:
        handle.write(descriptor(count))
    try:
        started = time.monotonic()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdmesh",
                "run",
                "--json",
                "--hypervisor",
                "qemu:///system",
                "--state-dir",
                str(state),
                "--name",
                "benchpool",
                "-D",
                f"guest.kernel={image.boot_kernel}",
                "-D",
                f"guest.initrd={image.initrd}",
                "-D",
                f"guest.base={image.base}",
                *(f"--allow-image-dir={directory}" for directory in image.allowed_dirs),
                handle.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "SDMESH_VIRT_TYPE": os.environ.get("SDMESH_VIRT_TYPE", "qemu")},
        )
        consoles = state / "volumes" / "console" / "benchpool"
        while True:
            logs = list(consoles.glob("*.log")) if consoles.exists() else []
            ready = sum(1 for log in logs if MARKER in log.read_text(errors="replace"))
            if ready == count:
                break
            if process.poll() is not None:
                raise RuntimeError(
                    f"sdmesh run ended: {process.stderr.read() if process.stderr else ''}"
                )
            if time.monotonic() - started > 300:
                raise TimeoutError(f"{ready}/{count} consoles up after 300 s")
            time.sleep(0.05)
        up = time.monotonic() - started
        down_start = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        return up, time.monotonic() - down_start
    finally:
        os.unlink(handle.name)
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run_real_guests: needs root (qemu:///system)", file=sys.stderr)
        return 1
    try:
        ensure_host()
    except HostNotReady as error:
        print(f"run_real_guests: cannot run: {error}", file=sys.stderr)
        return 1
    virsh = baseline(args.n)
    up, down = sdmesh(args.n)
    print(f"{args.n} real guests (TCG, {os.cpu_count()} cores) to console-up")
    print(f"  sequential virsh create loop: {virsh:.2f} s")
    print(f"  sdmesh run (parallel pool):   {up:.2f} s (teardown {down:.2f} s)")
    print(f"  ratio sdmesh/virsh: {up / virsh:.2f} (target < 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
