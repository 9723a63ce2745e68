"""LibvirtDriver on libvirt's test driver: lifecycle, rebuild from libvirt, admission."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import libvirt
import pytest
from hv_support import MakeHost, meta, vm

from sdmesh.hypervisor import (
    DomainExists,
    DomainState,
    GuestIdentity,
    HypervisorError,
    HypervisorUnavailable,
    InsufficientResources,
    KernelBoot,
    LibvirtDriver,
    NicSpec,
    NotManaged,
    UnsupportedCapability,
    derive_mac,
)
from sdmesh.hypervisor.domain_xml import metadata_from_domain_xml


async def test_define_start_list_destroy(make_host: MakeHost) -> None:
    async with LibvirtDriver(make_host()) as driver:
        started = await driver.define_and_start(vm("vm1"), meta("pool-1", "sfConfig:vm1", 3))
        assert started.state is DomainState.RUNNING and started.memory_mib == 64
        [listed] = await driver.list_managed()
        assert (listed.name, listed.uuid, listed.metadata) == (
            "vm1",
            started.uuid,
            started.metadata,
        )
        assert listed.metadata.created_at is not None
        assert await driver.domain_state("vm1") is DomainState.RUNNING
        assert await driver.destroy("vm1") is True
        assert await driver.domain_state("vm1") is DomainState.ABSENT
        assert await driver.destroy("vm1") is False  # idempotent
        assert await driver.list_managed() == []


async def test_state_is_rebuilt_from_libvirt_after_reconnecting(default_host: Any) -> None:
    async with LibvirtDriver("test:///default") as first:
        await first.define_and_start(vm("rb-a"), meta("pool-a", "sfConfig:pool:a", 5))
        await first.define_and_start(vm("rb-b", 128, 2), meta("pool-b", "sfConfig:pool:b", 9))
        before = await first.list_managed()
    async with LibvirtDriver("test:///default") as second:  # a new driver knows nothing
        after = await second.list_managed()
        assert after == before
        assert [(d.metadata.pool, d.metadata.path, d.metadata.generation) for d in after] == [
            ("pool-a", "sfConfig:pool:a", 5),
            ("pool-b", "sfConfig:pool:b", 9),
        ]
        assert after[1].metadata.descriptor_hash == "sha256:" + "09" * 32
        assert (after[1].memory_mib, after[1].vcpus) == (128, 2)
        assert [d.name for d in await second.list_managed("pool-a")] == ["rb-a"]
        # The driver's built-in demo domain is not ours: never listed, never touched.
        with pytest.raises(NotManaged):
            await second.destroy("test")
        assert default_host.lookupByName("test") is not None
        for domain in after:
            await second.destroy(domain.name)


async def test_name_taken(make_host: MakeHost) -> None:
    async with LibvirtDriver(make_host()) as driver:
        await driver.define_and_start(vm("dup"), meta("pool-1", "a"))
        with pytest.raises(DomainExists, match="pool-1"):
            await driver.check(vm("dup"))
        with pytest.raises(DomainExists, match="pool-1"):
            await driver.define_and_start(vm("dup"), meta("pool-2", "b"))
        [kept] = await driver.list_managed()
        assert kept.metadata.pool == "pool-1"


async def test_two_isolated_hosts(make_host: MakeHost) -> None:
    small, large = (
        make_host("small", cpus=2, memory_mib=1024),
        make_host("large", cpus=32, memory_mib=65536),
    )
    async with LibvirtDriver(small) as a, LibvirtDriver(large) as b:
        caps_a, caps_b = await a.capabilities(), await b.capabilities()
        assert (caps_a.cpus, caps_a.memory_mib) == (2, 1024)
        assert (caps_b.cpus, caps_b.memory_mib) == (32, 65536)
        assert caps_a.driver == "test" and caps_a.direct_kernel_boot and caps_a.xen_pv
        await a.define_and_start(vm("only-on-a"), meta("p", "x"))
        assert [d.name for d in await a.list_managed()] == ["only-on-a"]
        assert await b.list_managed() == []
        capacity = await a.capacity()
        assert (capacity.cpus, capacity.memory_mib, capacity.committed_memory_mib) == (2, 1024, 64)
        assert capacity.free_memory_mib is None  # the test driver cannot tell


async def test_insufficient_resources_are_refused_before_defining(make_host: MakeHost) -> None:
    async with LibvirtDriver(make_host(cpus=4, memory_mib=1024)) as driver:
        for i in range(3):
            await driver.define_and_start(vm(f"m{i}", 300), meta("p", f"m{i}"))
        with pytest.raises(InsufficientResources, match="124 MiB are available"):
            await driver.define_and_start(vm("m3", 300), meta("p", "m3"))
        with pytest.raises(InsufficientResources, match="4 CPUs"):
            await driver.define_and_start(vm("wide", 64, vcpus=8), meta("p", "wide"))
        assert len(await driver.list_managed()) == 3
        await driver.destroy("m0")
        await driver.define_and_start(vm("m3", 300), meta("p", "m3"))  # room again


async def test_admission_holds_under_concurrency(make_host: MakeHost) -> None:
    async with LibvirtDriver(make_host(memory_mib=1024)) as driver:
        results = await asyncio.gather(
            *(driver.define_and_start(vm(f"c{i}", 128), meta("p", f"c{i}")) for i in range(20)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, InsufficientResources)]
        assert len(refused) == 12 and len(await driver.list_managed()) == 8


async def test_many_concurrent_domains(make_host: MakeHost) -> None:
    async with LibvirtDriver(make_host(memory_mib=1 << 20)) as driver:
        await asyncio.gather(
            *(driver.define_and_start(vm(f"d{i}"), meta("p", f"d{i}")) for i in range(200))
        )
        assert len(await driver.list_managed("p")) == 200
        assert all(await asyncio.gather(*(driver.destroy(f"d{i}") for i in range(200))))
        assert await driver.list_managed() == []


async def test_unsupported_capability_is_refused_before_anything_is_created(
    make_host: MakeHost, default_host: Any
) -> None:
    async with LibvirtDriver(make_host(cpus=64)) as driver:
        with pytest.raises(UnsupportedCapability, match="allows 32"):
            await driver.check(vm("too-wide", vcpus=40))
        with pytest.raises(UnsupportedCapability, match="allows 32"):
            await driver.define_and_start(vm("too-wide", vcpus=40), meta("p", "w"))
        driver._caps = replace(await driver.capabilities(), direct_kernel_boot=False)
        with pytest.raises(UnsupportedCapability, match="kernel directly"):
            await driver.define_and_start(vm("kernel"), meta("p", "k"))
        assert await driver.list_managed() == []
        assert await driver.domain_state("kernel") is DomainState.ABSENT


HOSTILE_NAME = "vm <&\"'> ]]>"
HOSTILE_CMDLINE = 'console=ttyS0 sdmesh.note="<&\'>" ]]>'


async def test_hostile_values_survive_libvirt(default_host: Any) -> None:
    spec = vm(
        HOSTILE_NAME,
        boot=KernelBoot("/boot/vmlinuz", "/boot/initrd & co", HOSTILE_CMDLINE),
        nics=(NicSpec.on_network(derive_mac("p <&>", "a")),),
        identity=GuestIdentity("web1", "10.0.0.5", "24", "10.0.0.1"),
        console_log="/var/log/sdmesh/<&>.log",
    )
    metadata = meta("pool <&\"'>", "sfConfig:pool:<&>")
    async with LibvirtDriver("test:///default") as driver:
        await driver.define_and_start(spec, metadata)
        xml = default_host.lookupByName(HOSTILE_NAME).XMLDesc()
        root = ET.fromstring(xml)
        assert root.findtext("name") == HOSTILE_NAME
        assert (
            root.findtext("os/cmdline")
            == HOSTILE_CMDLINE + " ip=10.0.0.5::10.0.0.1:255.255.255.0:web1::off"
        )
        assert root.findtext("os/initrd") == "/boot/initrd & co"
        assert root.find("devices/interface/mac").get("address") == derive_mac("p <&>", "a")
        found = metadata_from_domain_xml(xml)
        assert found is not None and (found.pool, found.path) == (metadata.pool, metadata.path)
        [listed] = [d for d in await driver.list_managed() if d.name == HOSTILE_NAME]
        assert listed.metadata.pool == metadata.pool
        assert await driver.destroy(HOSTILE_NAME)


async def test_xen_pv_flavour_keeps_its_shape_on_the_test_driver(default_host: Any) -> None:
    async with LibvirtDriver("test:///default") as driver:
        await driver.define_and_start(vm("pv1", flavour="xen"), meta("p", "pv1"))
        root = ET.fromstring(default_host.lookupByName("pv1").XMLDesc())
        assert root.findtext("os/type") == "xen"
        assert root.find("devices/console/target").get("type") == "xen"
        await driver.destroy("pv1")


async def test_errors_are_sdmesh_errors_with_hints(tmp_path: Any) -> None:
    with pytest.raises(HypervisorUnavailable, match="cannot connect") as caught:
        await LibvirtDriver(f"test://{tmp_path}/missing.xml").open()
    assert caught.value.hint and not isinstance(caught.value, libvirt.libvirtError)
    closed = LibvirtDriver("test:///default")
    with pytest.raises(HypervisorError, match="not open"):
        await closed.list_managed()
