"""What a host can do, as flags, and the host-side check of a spec against them.

Flags come from ``getCapabilities()`` (guest OS types, domain types such as ``kvm``),
``getDomainCapabilities()`` where the driver has it (vCPU limit), ``getInfo()`` (CPUs,
memory) and the driver type; what libvirt does not report (direct kernel boot, qcow2
backing chains) follows from the driver. :func:`resolve_target` is the host-side half of
validation (the cheap half is ``DomainSpec.validate``): it runs before any volume or domain
is created and says exactly which capability is missing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from sdmesh.hypervisor.errors import UnsupportedCapability
from sdmesh.hypervisor.spec import DomainSpec, KernelBoot

DriverKind = Literal["qemu", "xen", "test", "other"]


@dataclass(frozen=True)
class GuestSupport:
    """One ``<guest>`` of the capabilities: an OS type on an arch, with its domain types."""

    os_type: str
    arch: str
    domain_types: frozenset[str]


@dataclass(frozen=True)
class HostCapacity:
    """Size of the host; ``free_memory_mib`` is None when the driver cannot tell."""

    cpus: int
    memory_mib: int
    free_memory_mib: int | None = None
    committed_memory_mib: int = 0


@dataclass(frozen=True)
class HostCapabilities:
    """Static facts about a hypervisor host, read once per connection."""

    uri: str
    driver: DriverKind
    host_arch: str
    guests: tuple[GuestSupport, ...]
    direct_kernel_boot: bool
    qcow2_backing_files: bool
    kvm_accel: bool
    xen_pv: bool
    hvm: bool
    max_vcpus: int
    cpus: int
    memory_mib: int

    def os_types(self) -> frozenset[str]:
        return frozenset(guest.os_type for guest in self.guests)


@dataclass(frozen=True)
class RenderTarget:
    """How a spec becomes XML on this host: libvirt domain type and guest OS type."""

    domain_type: str  # kvm, qemu (TCG), xen, test
    os_type: str  # hvm or xen (paravirtualised)
    accelerated: bool

    @property
    def paravirt(self) -> bool:
        return self.os_type == "xen"


def driver_kind(conn_type: str, uri: str) -> DriverKind:
    """Which driver a connection talks to, from ``getType()`` or else the URI scheme."""
    kind = conn_type.strip().lower()
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    for candidate in (kind, scheme):
        if candidate == "qemu":
            return "qemu"
        if candidate in ("xen", "libxl"):
            return "xen"
        if candidate == "test":
            return "test"
    return "other"


def parse_guests(caps_xml: str) -> tuple[str, tuple[GuestSupport, ...]]:
    """Host arch and guest support from ``getCapabilities()`` XML."""
    root = ET.fromstring(caps_xml)
    host_arch = root.findtext("host/cpu/arch", default="").strip()
    guests = []
    for guest in root.findall("guest"):
        os_type = guest.findtext("os_type", default="").strip()
        arch = guest.find("arch")
        if arch is None or not os_type:
            continue
        types = frozenset(dom.get("type", "") for dom in arch.findall("domain")) - {""}
        guests.append(GuestSupport(os_type, arch.get("name", ""), types))
    return host_arch, tuple(guests)


def parse_domcaps_max_vcpus(domcaps_xml: str | None) -> int | None:
    if not domcaps_xml:
        return None
    element = ET.fromstring(domcaps_xml).find("vcpu")
    if element is None or not element.get("max", "").isdigit():
        return None
    return int(element.get("max", "0"))


def build_capabilities(
    *,
    uri: str,
    conn_type: str,
    caps_xml: str,
    cpus: int,
    memory_mib: int,
    max_vcpus: int | None = None,
    domcaps_xml: str | None = None,
) -> HostCapabilities:
    """Pure: everything the libvirt calls returned, turned into flags."""
    driver = driver_kind(conn_type, uri)
    host_arch, guests = parse_guests(caps_xml)
    os_types = {guest.os_type for guest in guests}
    domain_types = {kind for guest in guests for kind in guest.domain_types}
    limit = parse_domcaps_max_vcpus(domcaps_xml) or max_vcpus or cpus
    return HostCapabilities(
        uri=uri,
        driver=driver,
        host_arch=host_arch,
        guests=guests,
        # QEMU (-kernel), Xen (PV and HVM) and the test driver all boot a kernel directly.
        direct_kernel_boot=driver in ("qemu", "xen", "test"),
        # QEMU reads backing chains; Xen does through its qdisk (QEMU) backend.
        qcow2_backing_files=driver in ("qemu", "xen", "test"),
        kvm_accel="kvm" in domain_types,
        xen_pv="xen" in os_types,
        hvm="hvm" in os_types,
        max_vcpus=limit,
        cpus=cpus,
        memory_mib=memory_mib,
    )


def _unsupported(message: str, hint: str) -> UnsupportedCapability:
    return UnsupportedCapability(message, hint=hint)


def resolve_target(spec: DomainSpec, caps: HostCapabilities) -> RenderTarget:
    """Decide how ``spec`` runs on this host, or say which capability is missing."""
    kernel_boot = isinstance(spec.boot, KernelBoot)
    if caps.driver == "test":
        # The test driver simulates any flavour; keep the flavour's OS shape so its XML
        # is exercised (a Xen PV guest stays PV).
        paravirt = spec.flavour == "xen" and kernel_boot and caps.xen_pv
        target = RenderTarget("test", "xen" if paravirt else "hvm", accelerated=False)
    elif caps.driver == "qemu":
        if spec.flavour not in ("kvm", "qemu"):
            raise _unsupported(
                f"{spec.name}: a {spec.flavour} domain cannot run on a QEMU host ({caps.uri})",
                "use the KvmDomain flavour here, or place this pool on a Xen host (xen:///system)",
            )
        if not caps.hvm:
            raise _unsupported(f"{caps.uri} offers no hvm guests", "check `virsh capabilities`")
        accelerated = spec.flavour == "kvm" and caps.kvm_accel
        target = RenderTarget("kvm" if accelerated else "qemu", "hvm", accelerated)
    elif caps.driver == "xen":
        if spec.flavour != "xen":
            raise _unsupported(
                f"{spec.name}: a {spec.flavour} domain cannot run on a Xen host ({caps.uri})",
                "use the XenDomain flavour here, or place this pool on a KVM host",
            )
        if kernel_boot and not caps.xen_pv:
            raise _unsupported(
                f"{caps.uri} cannot run paravirtualised guests", "boot from a disk image (HVM)"
            )
        if not kernel_boot and not caps.hvm:
            raise _unsupported(
                f"{caps.uri} cannot run HVM guests (no VT-x/AMD-V?)",
                "boot a kernel directly (PV) instead of a disk image",
            )
        target = RenderTarget("xen", "xen" if kernel_boot else "hvm", accelerated=True)
    else:
        raise _unsupported(
            f"sdmesh does not drive this hypervisor ({caps.uri})",
            "use a qemu://, xen:// or test:// URI",
        )

    if kernel_boot and not caps.direct_kernel_boot:
        raise _unsupported(
            f"{caps.uri} cannot boot a kernel directly", "boot from a disk image instead"
        )
    backed = [disk.target for disk in spec.disks if disk.has_backing_file]
    if backed and not caps.qcow2_backing_files:
        raise _unsupported(
            f"{caps.uri} cannot use qcow2 backing files (disks {', '.join(backed)})",
            "use the LoopbackStorageBackend or LVMStorageBackend on this host",
        )
    if spec.vcpus > caps.max_vcpus:
        raise _unsupported(
            f"{spec.name} asks for {spec.vcpus} vCPUs; this hypervisor allows {caps.max_vcpus}",
            "lower vcpus in the descriptor",
        )
    if caps.driver == "xen" and any(nic.mode == "user" for nic in spec.nics):
        raise _unsupported(
            "Xen has no user-mode networking", "attach the NIC to a bridge (xenbr0) instead"
        )
    return target
