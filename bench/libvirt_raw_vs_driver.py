"""Raw libvirt loop vs LibvirtDriver.define_and_start on the test driver.

Starts N domains on a fresh simulated host twice: once as a plain loop of defineXML +
create (XML prepared beforehand), once through the driver (validation, capability and
admission checks, XML building, thread pool, event dispatch) with bounded concurrency.
Prints both times and their ratio; the target for the full engine is at most 3x raw.

    .venv/bin/python bench/libvirt_raw_vs_driver.py [--count 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import libvirt

from sdmesh.hypervisor import DomainSpec, KernelBoot, LibvirtDriver, NicSpec, SdmeshMetadata
from sdmesh.hypervisor.capabilities import RenderTarget
from sdmesh.hypervisor.domain_xml import build_domain_xml
from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.hypervisor.spec import GuestIdentity, derive_mac

POOL = "bench-pool"


def spec_for(index: int) -> tuple[DomainSpec, SdmeshMetadata]:
    path = f"sfConfig:pool:vm{index}"
    spec = DomainSpec(
        name=f"bench-vm{index}",
        memory_mib=64,
        vcpus=1,
        boot=KernelBoot("/boot/vmlinuz", "/boot/initrd.img", "console=hvc0"),
        nics=(NicSpec.on_network(derive_mac(POOL, path)),),
        console_log=f"/var/log/sdmesh/bench-vm{index}.log",
        identity=GuestIdentity(
            f"vm{index}", f"10.0.{index // 250}.{index % 250 + 1}", "16", "10.0.0.254"
        ),
        flavour="xen",
    )
    return spec, SdmeshMetadata(POOL, path, 1, "sha256:" + "ab" * 32)


def raw_loop(uri: str, xmls: list[str]) -> float:
    conn = libvirt.open(uri)
    try:
        started = time.perf_counter()
        for xml in xmls:
            conn.defineXML(xml).create()
        return time.perf_counter() - started
    finally:
        conn.close()


async def driver_run(uri: str, count: int, concurrency: int) -> tuple[float, float]:
    gate = asyncio.Semaphore(concurrency)
    specs = [spec_for(i) for i in range(count)]

    async def start(spec: DomainSpec, metadata: SdmeshMetadata) -> None:
        async with gate:
            await driver.define_and_start(spec, metadata)

    async def destroy(name: str) -> None:
        async with gate:
            await driver.destroy(name)

    async with LibvirtDriver(uri) as driver:
        started = time.perf_counter()
        await asyncio.gather(*(start(spec, metadata) for spec, metadata in specs))
        elapsed = time.perf_counter() - started
        assert len(await driver.list_managed(POOL)) == count
        started = time.perf_counter()
        await asyncio.gather(*(destroy(spec.name) for spec, _ in specs))
        teardown = time.perf_counter() - started
    return elapsed, teardown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    silence_libvirt_stderr()
    with tempfile.TemporaryDirectory() as tmp:
        memory = args.count * 64 * 2
        raw_uri = write_simulated_host(Path(tmp) / "raw.xml", cpus=64, memory_mib=memory)
        driver_uri = write_simulated_host(Path(tmp) / "driver.xml", cpus=64, memory_mib=memory)
        target = RenderTarget("test", "xen", accelerated=False)
        xmls = [build_domain_xml(*spec_for(i), target) for i in range(args.count)]
        raw = raw_loop(raw_uri, xmls)
        driver, teardown = asyncio.run(driver_run(driver_uri, args.count, args.concurrency))
    print(f"domains:               {args.count} (test driver, simulated host)")
    print(f"raw defineXML+create:  {raw:.3f} s  ({raw / args.count * 1e6:.0f} us/domain)")
    print(
        f"driver define_and_start: {driver:.3f} s  ({driver / args.count * 1e6:.0f} us/domain, "
        f"concurrency {args.concurrency})"
    )
    print(f"ratio driver/raw:      {driver / raw:.2f}x  (engine target: <= 3x)")
    print(f"driver destroy (all):  {teardown:.3f} s")


if __name__ == "__main__":
    main()
