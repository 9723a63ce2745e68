"""Domain XML: escaping, metadata round trip, and the shape per flavour."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from sdmesh.hypervisor.capabilities import RenderTarget
from sdmesh.hypervisor.domain_xml import (
    SDMESH_NS,
    MalformedMetadata,
    build_domain_xml,
    metadata_from_domain_xml,
    metadata_xml,
    parse_metadata,
)
from sdmesh.hypervisor.spec import (
    DiskBoot,
    DiskSpec,
    DomainSpec,
    GuestIdentity,
    KernelBoot,
    NicSpec,
    SdmeshMetadata,
)

HOSTILE = "vm <&\"'> ]]> --"
META = SdmeshMetadata(
    pool="pool <&\"'>",
    path="sfConfig:pool:dom&1",
    generation=7,
    descriptor_hash="sha256:" + "ab" * 32,
    node="node-1",
    created_at=1700000000.25,
)
KVM = RenderTarget("kvm", "hvm", accelerated=True)
TCG = RenderTarget("qemu", "hvm", accelerated=False)
XEN_PV = RenderTarget("xen", "xen", accelerated=True)
XEN_HVM = RenderTarget("xen", "hvm", accelerated=True)
TEST = RenderTarget("test", "hvm", accelerated=False)


def kernel_spec(**overrides: object) -> DomainSpec:
    fields: dict[str, object] = {
        "name": HOSTILE,
        "memory_mib": 256,
        "vcpus": 2,
        "boot": KernelBoot("/boot/vmlinuz <x>", "/boot/initrd&", 'console=hvc0 msg="<&>"'),
        "disks": (DiskSpec("/var/lib/sdmesh/a&b.qcow2", has_backing_file=True),),
        "nics": (NicSpec.on_network("52:54:12:34:56:78", "pool-net"),),
        "console_log": "/var/log/sdmesh/<vm>.log",
        "identity": GuestIdentity("h1", "10.0.0.5", "255.255.255.0", "10.0.0.1"),
    }
    fields.update(overrides)
    return DomainSpec(**fields)  # type: ignore[arg-type]


def test_hostile_values_round_trip_exactly() -> None:
    root = ET.fromstring(build_domain_xml(kernel_spec(), META, KVM))
    assert root.findtext("name") == HOSTILE
    assert root.findtext("os/kernel") == "/boot/vmlinuz <x>"
    assert root.findtext("os/initrd") == "/boot/initrd&"
    assert root.findtext("os/cmdline") == (
        'console=hvc0 msg="<&>" ip=10.0.0.5::10.0.0.1:255.255.255.0:h1::off'
    )
    assert root.find("devices/disk/source").get("file") == "/var/lib/sdmesh/a&b.qcow2"
    assert root.find("devices/interface/source").get("network") == "pool-net"
    assert root.find("devices/serial/log").get("file") == "/var/log/sdmesh/<vm>.log"


def test_metadata_round_trips_from_full_xml_and_from_libvirts_form() -> None:
    xml = build_domain_xml(kernel_spec(), META, KVM)
    assert f'xmlns:sdmesh="{SDMESH_NS}"' in xml
    assert metadata_from_domain_xml(xml) == META
    assert parse_metadata(metadata_xml(META)) == META
    # libvirt's dom.metadata() returns the element without its namespace:
    bare = metadata_xml(META).replace("sdmesh:", "").replace(f' xmlns:sdmesh="{SDMESH_NS}"', "")
    assert parse_metadata(bare) == META
    minimal = SdmeshMetadata("p", "a", 0, "sha256:" + "0" * 64)
    assert parse_metadata(metadata_xml(minimal)) == minimal


def test_foreign_and_malformed_metadata() -> None:
    assert metadata_from_domain_xml("<domain><name>x</name></domain>") is None
    with pytest.raises(MalformedMetadata):
        parse_metadata("<domain><pool>p</pool></domain>")
    with pytest.raises(MalformedMetadata):
        parse_metadata("<domain><pool>p</pool><path>a</path><generation>x</generation>"
                       "<descriptor-hash>h</descriptor-hash></domain>")  # fmt: skip
    with pytest.raises(MalformedMetadata):
        parse_metadata("not xml <")


def test_kvm_and_tcg() -> None:
    kvm = ET.fromstring(build_domain_xml(kernel_spec(), META, KVM))
    assert kvm.get("type") == "kvm"
    assert kvm.find("cpu").get("mode") == "host-passthrough"
    assert kvm.find("memory").text == "256" and kvm.find("memory").get("unit") == "MiB"
    assert kvm.findtext("vcpu") == "2"
    assert kvm.find("devices/rng") is not None
    assert kvm.find("devices/interface/model").get("type") == "virtio"
    assert kvm.find("devices/console/target").get("type") == "serial"
    tcg = ET.fromstring(build_domain_xml(kernel_spec(), META, TCG))
    assert tcg.get("type") == "qemu" and tcg.find("cpu") is None


def test_disk_boot_has_boot_device_and_cdrom_seed() -> None:
    spec = kernel_spec(
        boot=DiskBoot(),
        disks=(DiskSpec("/v/root.qcow2"), DiskSpec.seed_cdrom("/v/seed.iso")),
    )
    root = ET.fromstring(build_domain_xml(spec, META, KVM))
    assert root.find("os/boot").get("dev") == "hd" and root.find("os/kernel") is None
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("readonly") is not None
    assert cdrom.find("driver").get("type") == "raw"


def test_xen_pv_and_hvm() -> None:
    spec = kernel_spec(
        disks=(DiskSpec("/dev/vg0/dom1", format="raw", target="xvda", bus="xen", kind="block"),),
        nics=(NicSpec.on_bridge("52:54:12:34:56:78", "xenbr0"),),
    )
    pv = ET.fromstring(build_domain_xml(spec, META, XEN_PV))
    assert pv.get("type") == "xen" and pv.findtext("os/type") == "xen"
    assert pv.find("os/boot") is None and pv.find("features") is None
    disk = pv.find("devices/disk")
    assert disk.get("type") == "block" and disk.find("driver").get("name") == "phy"
    assert disk.find("source").get("dev") == "/dev/vg0/dom1"
    assert pv.find("devices/interface/model") is None  # netfront
    assert pv.find("devices/console/target").get("type") == "xen"
    assert pv.find("devices/console/log") is not None and pv.find("devices/serial") is None
    hvm_spec = kernel_spec(
        boot=DiskBoot(), disks=(DiskSpec("/v/a.qcow2", target="xvda", bus="xen"),)
    )
    hvm = ET.fromstring(build_domain_xml(hvm_spec, META, XEN_HVM))
    assert hvm.findtext("os/type") == "hvm" and hvm.find("features/pae") is not None


def test_test_driver_shape() -> None:
    root = ET.fromstring(build_domain_xml(kernel_spec(), META, TEST))
    assert root.get("type") == "test" and root.find("features") is None
    assert root.find("devices/rng") is None


def test_invalid_inputs_never_reach_xml() -> None:
    with pytest.raises(ValueError):
        build_domain_xml(kernel_spec(name="a/b"), META, KVM)
    with pytest.raises(ValueError):
        build_domain_xml(kernel_spec(), SdmeshMetadata("p", "a\x00", 1, "sha256:" + "0" * 64), KVM)
