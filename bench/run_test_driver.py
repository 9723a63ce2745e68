"""1,000 VMs through the whole engine on the test driver, against raw libvirt calls.

sdmesh side: a generated descriptor (a Parallel with asynchCreateChild of N VMs; with
--disks each also gets a qcow2-overlay disk component, which the baseline does not have),
resolved, then run by the same code as
``sdmesh run`` (lifecycle engine, components, simulated disks, libvirt driver) until every VM
runs, then terminated until everything is gone. Baseline, measured in the same run on its own
fresh simulated host: a plain loop of defineXML + create over exactly the domain XML sdmesh
defined (captured from the sdmesh run), then destroy + undefine.

    .venv/bin/python bench/run_test_driver.py [--count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import libvirt

from sdmesh.components.context import HostContext
from sdmesh.components.registry import component_factory
from sdmesh.hypervisor import LibvirtDriver
from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.language import resolve_text
from sdmesh.lifecycle.model import State, StateChanged, TerminationRecord
from sdmesh.runner.app import ApplicationRunner

POOL = "bench"


def descriptor(count: int, disks: bool) -> str:
    if disks:
        vms = "\n".join(
            f"        sd{i} extends Compound {{ disk extends Qcow2OverlayBackend "
            f'{{ baseImage "/srv/base.qcow2"; }} vm extends Worker {{ hostname "vm{i}"; '
            f'ip "10.0.{i // 250}.{i % 250 + 1}"; storageBackend LAZY ATTRIB disk; }} }}'
            for i in range(count)
        )
    else:
        vms = "\n".join(
            f'        vm{i} extends Worker {{ hostname "vm{i}"; '
            f'ip "10.0.{i // 250}.{i % 250 + 1}"; }}'
            for i in range(count)
        )
    return (
        '#include "sdmesh/components.sf"\n'
        'Worker extends XenDomain { kernel "/boot/vmlinuz"; netmask "255.255.0.0"; '
        'gateway "10.0.0.254"; memory 64; }\n'
        "sfConfig extends Compound {\n    pool extends VirtualPool {\n" + vms + "\n    }\n}\n"
    )


async def sdmesh_run(
    uri: str, state: Path, text: str, count: int
) -> tuple[float, float, float, list[str]]:
    started = time.perf_counter()
    resolved = resolve_text(text, "bench.sf")
    resolve_time = time.perf_counter() - started
    running = 0
    all_running = asyncio.Event()
    ended_at = 0.0

    def on_state(change: StateChanged) -> None:
        nonlocal running
        if change.state is State.RUNNING and change.kind == "Worker":
            running += 1
            if running == count:
                all_running.set()

    async with LibvirtDriver(uri) as driver:
        context = HostContext(
            driver, await driver.capabilities(), state, POOL, 1, "sha256:" + resolved.digest()
        )
        runner = ApplicationRunner(resolved.root, component_factory(context), on_state)
        task = asyncio.create_task(runner.run())
        await all_running.wait()
        up = time.perf_counter() - started
        # The exact definitions sdmesh made, for the baseline to replay with a plain loop.
        conn = driver._conn  # the bench may look inside; the product never does
        xmls = await asyncio.to_thread(lambda: [d.XMLDesc(0) for d in conn.listAllDomains()])
        down_start = time.perf_counter()
        runner.terminate(TerminationRecord.normal_end("bench done"))
        record = await task
        ended_at = time.perf_counter() - down_start
        assert record.normal, record
        left = await driver.list_managed()
        assert not left, f"{len(left)} domains left"
        await context.close()
    assert not any((state / "simulated").glob("*")), "volumes left"
    return resolve_time, up, ended_at, xmls


def raw_baseline(uri: str, xmls: list[str]) -> tuple[float, float]:
    """define + create each domain, then destroy + undefine: the same XML, no sdmesh."""
    names = [xml.split("<name>", 1)[1].split("</name>", 1)[0] for xml in xmls]
    conn = libvirt.open(uri)
    try:
        started = time.perf_counter()
        for xml in xmls:
            conn.defineXML(xml).create()
        up = time.perf_counter() - started
        started = time.perf_counter()
        for name in names:
            dom = conn.lookupByName(name)
            dom.destroy()
            dom.undefine()
        return up, time.perf_counter() - started
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--disks", action="store_true", help="give every VM a disk component (not in the baseline)"
    )
    args = parser.parse_args()
    silence_libvirt_stderr()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hosts = []
        for name in ("sdmesh", "raw"):
            host = root / f"{name}.xml"
            write_simulated_host(host, cpus=4096, memory_mib=args.count * 128)
            hosts.append(f"test://{host}")
        resolve_time, up, down, xmls = asyncio.run(
            sdmesh_run(hosts[0], root / "state", descriptor(args.count, args.disks), args.count)
        )
        raw_up, raw_down = raw_baseline(hosts[1], xmls)
    what = "each with a disk component" if args.disks else "kernel boot, no disk"
    print(f"{args.count} VMs ({what}) on libvirt's test driver")
    print(
        f"  raw libvirt loop:  up {raw_up:.2f} s, down {raw_down:.2f} s, "
        f"total {raw_up + raw_down:.2f} s"
    )
    print(
        f"  sdmesh engine:     up {up:.2f} s (of which resolve {resolve_time:.2f} s), "
        f"down {down:.2f} s, total {up + down:.2f} s"
    )
    print(
        f"  ratio sdmesh/raw:  up {up / raw_up:.1f}x, down {down / raw_down:.1f}x, "
        f"total {(up + down) / (raw_up + raw_down):.1f}x (target <= 3x)"
    )


if __name__ == "__main__":
    main()
