"""Simulated hosts for libvirt's test driver: ``test:///ABS/PATH/host.xml``.

Each connection to such a URI gets its own private, in-memory host with the CPUs and memory
the file declares, so one process can run many isolated "hypervisors" without a daemon.
(``test:///default`` is shared by every connection of the process and ships a running
8 GiB domain ``test`` on a 3 GiB host, which admission rightly refuses to add to.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from sdmesh.safeio import ensure_private_dir, write_private

#: The embedded default hypervisor of ``sdmesh run`` and ``sdmesh join``: libvirt's test
#: driver, simulating a host of this size.
EMBEDDED = "test"
EMBEDDED_CPUS = 64
EMBEDDED_MEMORY_MIB = 256 * 1024


def simulated_host_xml(*, cpus: int, memory_mib: int, mhz: int = 2000) -> str:
    """A test-driver node description with the given capacity and no domains."""
    if cpus < 1 or memory_mib < 1:
        raise ValueError("a simulated host needs at least one CPU and 1 MiB of memory")
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", mhz),
        ("model", "x86_64"),
        ("active", cpus),
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
    ):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mib * 1024)  # KiB
    return ET.tostring(node, encoding="unicode")


def write_simulated_host(path: Path, *, cpus: int, memory_mib: int) -> str:
    """Write the host file and return the libvirt URI that opens a private copy of it."""
    path = path.resolve()
    write_private(path, simulated_host_xml(cpus=cpus, memory_mib=memory_mib).encode())
    return f"test://{path}"


def hypervisor_uri(hypervisor: str, state_dir: Path) -> str:
    """``test`` means the embedded simulated host (kept in the state directory)."""
    if hypervisor in ("", EMBEDDED):
        host = state_dir / "hosts" / "embedded.xml"
        if not host.exists():
            ensure_private_dir(host.parent, 0o700, what="hosts directory")
            write_simulated_host(host, cpus=EMBEDDED_CPUS, memory_mib=EMBEDDED_MEMORY_MIB)
        return f"test://{host.resolve()}"
    return hypervisor
