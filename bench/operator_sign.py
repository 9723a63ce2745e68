"""Cost of operator signatures: signing a submission, and the check each host makes per leaf.

Measures, in one run: Ed25519 signing of a descriptor envelope (once per submission, on the
CLI or the agent), the host's per-leaf check (envelope bytes decoded, key looked up, signature
verified, pool, digest, time and role checked: ``authorize_order``), the submission-time
check, loading a trust store of 20 operators, and, as the yardstick, a raw libvirt
``defineXML`` of a domain on the test driver (the cheapest thing a VM leaf does on a host).

    .venv/bin/python bench/operator_sign.py [--count 2000] [--domains 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from sdmesh.hypervisor.capabilities import RenderTarget
from sdmesh.hypervisor.domain_xml import build_domain_xml
from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.trust.authorize import authorize_order, authorize_submission
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import sign_descriptor
from sdmesh.trust.store import TrustStore, trust_operator

DIGEST = "ab" * 32
VM = "sdmesh.components.VirtualMachine"
DISK = "sdmesh.storage.Qcow2OverlayBackend"


def per_op_us(count: int, operation: Callable[[int], object], rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time per call, in microseconds."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for index in range(count):
            operation(index)
        results.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(results)


def raw_define_us(directory: Path, domains: int) -> float:
    """Per-domain microseconds of a plain ``defineXML`` loop on a fresh simulated host."""
    import importlib.util

    spec_path = Path(__file__).with_name("libvirt_raw_vs_driver.py")
    loaded = importlib.util.spec_from_file_location("raw_vs_driver", spec_path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    target = RenderTarget("test", "xen", accelerated=False)
    xmls = []
    for index in range(domains):
        spec, metadata = module.spec_for(index)
        xmls.append(build_domain_xml(spec, metadata, target))
    uri = write_simulated_host(directory / "host.xml", cpus=64, memory_mib=domains * 128)
    conn = libvirt.open(uri)
    try:
        started = time.perf_counter()
        for xml in xmls:
            conn.defineXML(xml)
        return (time.perf_counter() - started) / domains * 1e6
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--domains", type=int, default=500, help="domains for the yardstick")
    args = parser.parse_args()
    silence_libvirt_stderr()
    operators = [OperatorKey.generate(f"op{i}") for i in range(20)]
    signer = operators[7]
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "operators.d"
        store_dir.mkdir()
        os.chmod(store_dir, 0o755)
        for key in operators:
            trust_operator(store_dir, key.public, Role.OPERATE)
        load_us = per_op_us(50, lambda _: TrustStore.load(store_dir))
        trust = TrustStore.load(store_dir)
        assert len(trust.operators) == 20
        now = time.time()
        envelope = sign_descriptor(signer, "web", DIGEST, Role.OPERATE, now)
        wire = envelope.encode()
        assert authorize_order(wire, DIGEST, "web", VM, trust, now) is None

        def sign(index: int) -> object:
            return sign_descriptor(signer, "web", DIGEST, Role.OPERATE, now + index)

        def check_cold(_: int) -> object:
            return authorize_order(wire, DIGEST, "web", VM, trust, now)

        host = HostTrust(store_dir, trust)

        def check_cached(_: int) -> object:
            return host.check_leaf(wire, DIGEST, "web", VM, now)

        def check_submission(_: int) -> object:
            return authorize_submission(envelope, DIGEST, "web", [DISK, VM] * 50, trust, now)

        sign_us = per_op_us(args.count, sign)
        cold_us = per_op_us(args.count, check_cold)
        cached_us = per_op_us(args.count, check_cached)
        submit_us = per_op_us(args.count, check_submission)
        define_us = raw_define_us(Path(tmp), args.domains)

    print(f"operations per figure:             {args.count} (median of 5 rounds)")
    print(f"sign (once per submission):        {sign_us:8.1f} us")
    print(f"check, first leaf of a pool:       {cold_us:8.1f} us  (decode, Ed25519 verify, checks)")
    print(f"check, each further leaf:          {cached_us:8.1f} us  (envelope already verified)")
    print(f"check at submission (100 leaves):  {submit_us:8.1f} us  (one verify)")
    print(f"trust store load (20 keys):        {load_us:8.1f} us")
    print(f"raw libvirt defineXML (test drv):  {define_us:8.1f} us/domain ({args.domains} domains)")
    print(f"first-leaf check / raw define:     {cold_us / define_us * 100:8.1f} %")
    print(f"further-leaf check / raw define:   {cached_us / define_us * 100:8.1f} %")


if __name__ == "__main__":
    main()
