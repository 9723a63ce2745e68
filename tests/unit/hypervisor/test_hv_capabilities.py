"""Capability flags from capabilities XML, and the host-side check of specs against them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sdmesh.hypervisor.capabilities import (
    HostCapabilities,
    build_capabilities,
    driver_kind,
    parse_domcaps_max_vcpus,
    resolve_target,
)
from sdmesh.hypervisor.errors import UnsupportedCapability
from sdmesh.hypervisor.spec import DiskBoot, DiskSpec, DomainSpec, KernelBoot, NicSpec


def caps_xml(arch: str, *guests: tuple[str, tuple[str, ...]]) -> str:
    parts = [f"<capabilities><host><cpu><arch>{arch}</arch></cpu></host>"]
    for os_type, domain_types in guests:
        domains = "".join(f"<domain type='{kind}'/>" for kind in domain_types)
        parts.append(
            f"<guest><os_type>{os_type}</os_type><arch name='{arch}'>"
            f"<wordsize>64</wordsize>{domains}</arch></guest>"
        )
    parts.append("</capabilities>")
    return "".join(parts)


QEMU_KVM = caps_xml("x86_64", ("hvm", ("qemu", "kvm")))
QEMU_TCG = caps_xml("x86_64", ("hvm", ("qemu",)))
XEN = caps_xml("x86_64", ("xen", ("xen",)), ("hvm", ("xen",)))
XEN_PV_ONLY = caps_xml("x86_64", ("xen", ("xen",)))
DOMCAPS = "<domainCapabilities><vcpu max='255'/><os supported='yes'/></domainCapabilities>"


def host(uri: str, conn_type: str, xml: str, **kw: object) -> HostCapabilities:
    return build_capabilities(
        uri=uri,
        conn_type=conn_type,
        caps_xml=xml,
        cpus=8,
        memory_mib=16384,
        **kw,  # type: ignore[arg-type]
    )


def vm(flavour: str = "kvm", boot: object = None, **kw: object) -> DomainSpec:
    return DomainSpec(
        name="vm", memory_mib=512, vcpus=2, boot=boot or KernelBoot("/boot/vmlinuz"),
        flavour=flavour, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_driver_kind() -> None:
    assert driver_kind("QEMU", "qemu:///system") == "qemu"
    assert driver_kind("Xen", "xen:///system") == "xen"
    assert driver_kind("", "xen+ssh://root@h/system") == "xen"
    assert driver_kind("TEST", "test:///default") == "test"
    assert driver_kind("ESX", "esx://h") == "other"


def test_qemu_with_kvm() -> None:
    caps = host("qemu:///system", "QEMU", QEMU_KVM, domcaps_xml=DOMCAPS, max_vcpus=16)
    assert caps.driver == "qemu" and caps.kvm_accel and caps.hvm and not caps.xen_pv
    assert caps.direct_kernel_boot and caps.qcow2_backing_files
    assert caps.max_vcpus == 255  # domain capabilities win over getMaxVcpus
    assert caps.host_arch == "x86_64" and (caps.cpus, caps.memory_mib) == (8, 16384)
    target = resolve_target(vm("kvm"), caps)
    assert (target.domain_type, target.os_type, target.accelerated) == ("kvm", "hvm", True)
    assert resolve_target(vm("qemu"), caps).domain_type == "qemu"


def test_kvm_flavour_falls_back_to_tcg_without_kvm() -> None:
    caps = host("qemu:///system", "QEMU", QEMU_TCG, max_vcpus=16)
    assert not caps.kvm_accel and caps.max_vcpus == 16
    target = resolve_target(vm("kvm"), caps)
    assert (target.domain_type, target.accelerated) == ("qemu", False)


def test_xen_host() -> None:
    caps = host("xen:///system", "Xen", XEN)
    assert caps.xen_pv and caps.hvm and not caps.kvm_accel
    assert resolve_target(vm("xen"), caps).os_type == "xen"  # PV with a kernel
    assert (
        resolve_target(vm("xen", DiskBoot(), disks=(DiskSpec("/a.qcow2"),)), caps).os_type == "hvm"
    )
    with pytest.raises(UnsupportedCapability, match="HVM"):
        resolve_target(
            vm("xen", DiskBoot(), disks=(DiskSpec("/a"),)), host("xen:///", "Xen", XEN_PV_ONLY)
        )
    with pytest.raises(UnsupportedCapability, match="user-mode"):
        resolve_target(vm("xen", nics=(NicSpec.user_mode("52:54:01:02:03:04"),)), caps)


@pytest.mark.parametrize(
    ("flavour", "uri", "conn_type", "xml", "match"),
    [
        ("xen", "qemu:///system", "QEMU", QEMU_KVM, "Xen host"),
        ("test", "qemu:///system", "QEMU", QEMU_KVM, "KvmDomain"),
        ("kvm", "xen:///system", "Xen", XEN, "XenDomain"),
        ("kvm", "vbox:///session", "VBOX", QEMU_KVM, "does not drive"),
    ],
)
def test_flavour_host_mismatch(
    flavour: str, uri: str, conn_type: str, xml: str, match: str
) -> None:
    with pytest.raises(UnsupportedCapability, match=match):
        resolve_target(vm(flavour), host(uri, conn_type, xml))


def test_missing_flags_are_named() -> None:
    caps = host("qemu:///system", "QEMU", QEMU_KVM)
    with pytest.raises(UnsupportedCapability, match="kernel directly"):
        resolve_target(vm(), replace(caps, direct_kernel_boot=False))
    backed = vm(disks=(DiskSpec("/a.qcow2", has_backing_file=True),))
    with pytest.raises(UnsupportedCapability, match="backing files"):
        resolve_target(backed, replace(caps, qcow2_backing_files=False))
    with pytest.raises(UnsupportedCapability, match="allows 8"):
        resolve_target(replace(vm(), vcpus=9), caps)  # no limit reported: host CPUs


def test_test_driver_simulates_every_flavour_keeping_its_shape() -> None:
    caps = host("test:///default", "TEST", caps_xml("i686", ("hvm", ("test",)), ("xen", ("test",))))
    assert resolve_target(vm("xen"), caps).os_type == "xen"
    assert resolve_target(vm("kvm"), caps).os_type == "hvm"
    assert {resolve_target(vm(f), caps).domain_type for f in ("kvm", "qemu", "xen", "test")} == {
        "test"
    }


def test_domcaps_parsing() -> None:
    assert parse_domcaps_max_vcpus(None) is None
    assert parse_domcaps_max_vcpus("<domainCapabilities/>") is None
    assert parse_domcaps_max_vcpus(DOMCAPS) == 255
