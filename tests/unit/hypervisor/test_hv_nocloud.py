"""NoCloud seed documents and ISO, built in process."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sdmesh.hypervisor.nocloud import (
    NoCloudSeedStore,
    attach_seed,
    build_seed_iso,
    instance_id_for,
    read_seed_iso,
    seed_documents,
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
from sdmesh.storage.model import OwnerTag

IDENTITY = GuestIdentity(
    "web1.example.org", "192.168.7.10", "255.255.255.0", "192.168.7.1", ("192.168.7.53",)
)


def test_documents_carry_the_identity() -> None:
    docs = seed_documents(IDENTITY, instance_id="sdm-1", mac="52:54:aa:bb:cc:dd")
    meta = json.loads(docs["meta-data"])  # JSON is YAML: cloud-init reads it as such
    assert meta == {"instance-id": "sdm-1", "local-hostname": "web1.example.org"}
    user = docs["user-data"].decode()
    assert user.startswith("#cloud-config\n")
    assert json.loads(user.split("\n", 1)[1]) == {
        "fqdn": "web1.example.org",
        "hostname": "web1",
        "preserve_hostname": False,
    }
    network = json.loads(docs["network-config"])
    eth = network["ethernets"]["primary"]
    assert network["version"] == 2
    assert eth["match"] == {"macaddress": "52:54:aa:bb:cc:dd"} and eth["set-name"] == "eth0"
    assert eth["addresses"] == ["192.168.7.10/24"]
    assert eth["routes"] == [{"to": "default", "via": "192.168.7.1"}]
    assert eth["nameservers"] == {"addresses": ["192.168.7.53"]}


def test_dhcp_when_no_ip_and_custom_user_data() -> None:
    docs = seed_documents(
        GuestIdentity(hostname="h"), instance_id="i", user_data="#!/bin/sh\necho hi\n"
    )
    assert json.loads(docs["network-config"])["ethernets"]["primary"]["dhcp4"] is True
    assert docs["user-data"] == b"#!/bin/sh\necho hi\n"
    with pytest.raises(ValueError):
        seed_documents(GuestIdentity(), instance_id="i", user_data="hostname: x")


def test_iso_is_labelled_cidata_and_holds_the_files() -> None:
    docs = seed_documents(IDENTITY, instance_id="sdm-1")
    label, files = read_seed_iso(build_seed_iso(docs))
    assert label == "cidata"
    assert files == docs


def test_instance_id_changes_with_generation() -> None:
    one = SdmeshMetadata("p", "a", 1, "sha256:" + "0" * 64)
    two = SdmeshMetadata("p", "a", 2, "sha256:" + "0" * 64)
    assert instance_id_for(one) == instance_id_for(one) != instance_id_for(two)


async def test_seed_store_tags_lists_and_releases(tmp_path: Path) -> None:
    store = NoCloudSeedStore(tmp_path)
    owner = OwnerTag("pool-1", "sfConfig:vm1", 3)
    volume = await store.write(owner, seed_documents(IDENTITY, instance_id="x"))
    assert volume.path.suffix == ".iso" and volume.path.exists()
    assert read_seed_iso(volume.path.read_bytes())[0] == "cidata"
    assert await store.list_owned("pool-1") == [volume]
    assert await store.list_owned("other") == []
    assert await store.release(volume) and not volume.path.exists()
    assert await store.list_owned() == []


async def test_attach_seed_only_for_disk_boot_guests_with_an_identity(tmp_path: Path) -> None:
    store = NoCloudSeedStore(tmp_path)
    metadata = SdmeshMetadata("pool-1", "sfConfig:vm1", 2, "sha256:" + "0" * 64)
    disk_guest = DomainSpec(
        name="vm1",
        memory_mib=256,
        vcpus=1,
        boot=DiskBoot(),
        disks=(DiskSpec("/v/root.qcow2"),),
        nics=(NicSpec.on_network("52:54:aa:bb:cc:dd"),),
        identity=IDENTITY,
    )
    seeded, volume = await attach_seed(store, disk_guest, metadata)
    assert volume is not None and seeded.disks[-1] == DiskSpec.seed_cdrom(str(volume.path))
    seeded.validate()
    _, files = read_seed_iso(volume.path.read_bytes())
    assert json.loads(files["meta-data"])["instance-id"] == instance_id_for(metadata)
    network = json.loads(files["network-config"])["ethernets"]["primary"]
    assert network["match"] == {"macaddress": "52:54:aa:bb:cc:dd"}
    kernel_guest = replace(disk_guest, boot=KernelBoot("/boot/vmlinuz"))
    assert await attach_seed(store, kernel_guest, metadata) == (kernel_guest, None)
