"""Cheap spec checks, deterministic MACs and names, kernel ip= construction."""

from __future__ import annotations

import re

import pytest

from sdmesh.hypervisor.errors import InvalidSpec
from sdmesh.hypervisor.spec import (
    DiskBoot,
    DiskSpec,
    DomainSpec,
    GuestIdentity,
    KernelBoot,
    NicSpec,
    SdmeshMetadata,
    derive_mac,
    disk_target_for,
    domain_name_for,
    effective_cmdline,
    kernel_ip_argument,
)


def spec(**overrides: object) -> DomainSpec:
    fields: dict[str, object] = {
        "name": "vm1",
        "memory_mib": 128,
        "vcpus": 1,
        "boot": KernelBoot("/boot/vmlinuz"),
    }
    fields.update(overrides)
    return DomainSpec(**fields)  # type: ignore[arg-type]


def test_mac_is_deterministic_unicast_locally_administered_and_outside_libvirts_range() -> None:
    mac = derive_mac("pool-1", "sfConfig:pool:domain1")
    assert mac == derive_mac("pool-1", "sfConfig:pool:domain1")
    assert re.fullmatch(r"52:54:[0-9a-f]{2}(:[0-9a-f]{2}){3}", mac)
    first = int(mac[:2], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert not mac.startswith("52:54:00:")
    NicSpec.on_network(mac).validate()


def test_macs_differ_by_pool_path_and_nic_and_rarely_collide() -> None:
    assert derive_mac("p", "a") != derive_mac("q", "a")
    assert derive_mac("p", "a") != derive_mac("p", "b")
    assert derive_mac("p", "a", 0) != derive_mac("p", "a", 1)
    macs = {derive_mac("pool", f"vm{i}") for i in range(5000)}
    assert len(macs) == 5000
    assert not any(mac.startswith("52:54:00:") for mac in macs)


def test_domain_name_is_stable_safe_and_unique() -> None:
    name = domain_name_for("pool/1", "sfConfig:pool:<dom>")
    assert name == domain_name_for("pool/1", "sfConfig:pool:<dom>")
    assert "/" not in name and "<" not in name
    assert name != domain_name_for("pool/1", "sfConfig:pool:<dom2>")
    spec(name=name).validate()


def test_kernel_ip_argument() -> None:
    identity = GuestIdentity("host1", "10.0.0.5", "255.255.255.0", "10.0.0.1")
    assert kernel_ip_argument(identity) == "ip=10.0.0.5::10.0.0.1:255.255.255.0:host1::off"
    with_dns = GuestIdentity("h", "10.0.0.5", "24", None, ("10.0.0.53", "1.1.1.1"), "eth0")
    assert (
        kernel_ip_argument(with_dns) == "ip=10.0.0.5:::255.255.255.0:h:eth0:off:10.0.0.53:1.1.1.1"
    )
    assert kernel_ip_argument(GuestIdentity(hostname="h")) is None


def test_effective_cmdline_appends_ip_unless_present() -> None:
    identity = GuestIdentity("h", "10.1.2.3", "16", "10.1.0.1")
    assert effective_cmdline(KernelBoot("/k", None, "console=hvc0"), identity) == (
        "console=hvc0 ip=10.1.2.3::10.1.0.1:255.255.0.0:h::off"
    )
    assert effective_cmdline(KernelBoot("/k", None, "ip=dhcp"), identity) == "ip=dhcp"
    assert effective_cmdline(KernelBoot("/k", None, "quiet"), None) == "quiet"


@pytest.mark.parametrize(
    "identity",
    [
        GuestIdentity(hostname="bad host init=/bin/sh"),
        GuestIdentity(hostname="a:b"),
        GuestIdentity(hostname="-lead"),
        GuestIdentity(ip="10.0.0.300"),
        GuestIdentity(ip="10.0.0.5", netmask="255.0.255.0"),
        GuestIdentity(ip="10.0.0.5", netmask="24", gateway="10.9.9.9"),
        GuestIdentity(gateway="10.0.0.1"),
        GuestIdentity(nameservers=("nope",)),
    ],
)
def test_bad_identities_are_refused(identity: GuestIdentity) -> None:
    with pytest.raises(InvalidSpec):
        identity.validate()


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "a/b"},
        {"name": "tab\there"},
        {"memory_mib": 0},
        {"vcpus": 0},
        {"flavour": "vmware"},
        {"boot": KernelBoot("relative/vmlinuz")},
        {"boot": KernelBoot("/k", None, "line\nbreak")},
        {"boot": DiskBoot()},
        {"disks": (DiskSpec("/a.qcow2"), DiskSpec("/b.qcow2"))},  # same target vda
        {"disks": (DiskSpec("/a.qcow2", target="nvme0"),)},
        {"disks": (DiskSpec("/a.img", format="raw", has_backing_file=True),)},
        {"disks": (DiskSpec("/seed.iso", device="cdrom"),)},  # cdrom not readonly
        {
            "nics": (
                NicSpec.on_network("52:54:aa:bb:cc:dd"),
                NicSpec.on_network("52:54:aa:bb:cc:dd"),
            )
        },
        {"nics": (NicSpec.on_network("53:54:aa:bb:cc:dd"),)},  # multicast
        {"nics": (NicSpec.on_network("52:54:AA:bb:cc"),)},
        {"nics": (NicSpec("52:54:aa:bb:cc:dd", "bridge", None),)},
        {"nics": (NicSpec("52:54:aa:bb:cc:dd", "user", "default"),)},
        {"console_log": "console.log"},
    ],
)
def test_bad_specs_are_refused_without_a_host(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec):
        spec(**overrides).validate()


def test_good_spec_passes() -> None:
    spec(
        boot=DiskBoot(),
        disks=(DiskSpec("/v/a.qcow2", has_backing_file=True), DiskSpec.seed_cdrom("/v/seed.iso")),
        nics=(
            NicSpec.on_bridge(derive_mac("p", "a"), "br0"),
            NicSpec.user_mode(derive_mac("p", "a", 1)),
        ),
        console_log="/var/log/sdmesh/vm1.log",
        identity=GuestIdentity("vm1.example.org", "192.168.7.10", "255.255.255.0", "192.168.7.1"),
    ).validate()


def test_metadata_validation() -> None:
    SdmeshMetadata("p", "a", 0, "sha256:" + "0" * 64).validate()
    for bad in (
        SdmeshMetadata("", "a", 0, "sha256:" + "0" * 64),
        SdmeshMetadata("p", "a", -1, "sha256:" + "0" * 64),
        SdmeshMetadata("p", "a", 0, "not-a-hash"),
        SdmeshMetadata("p\x01", "a", 0, "sha256:" + "0" * 64),
    ):
        with pytest.raises(InvalidSpec):
            bad.validate()


def test_disk_targets() -> None:
    assert [disk_target_for("kvm", i) for i in (0, 1, 25, 26)] == ["vda", "vdb", "vdz", "vdaa"]
    assert disk_target_for("xen", 0) == "xvda"
