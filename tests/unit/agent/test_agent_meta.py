"""What an agent says about itself before and after its hypervisor is open."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.agent.meta import (
    disk_free_mib,
    member_meta,
    preliminary_meta,
    settled_disk_free,
    uri_driver_kind,
)
from sdmesh.hypervisor import HostCapabilities, HostCapacity
from sdmesh.hypervisor.capabilities import driver_kind

CAPS = HostCapabilities(
    uri="test:///default",
    driver="test",
    host_arch="x86_64",
    guests=(),
    direct_kernel_boot=True,
    qcow2_backing_files=True,
    kvm_accel=False,
    xen_pv=False,
    hvm=True,
    max_vcpus=8,
    cpus=8,
    memory_mib=1024,
)
CAPACITY = HostCapacity(8, 1024, 512, 128)


@pytest.mark.parametrize(
    "uri",
    [
        "test:///default",
        "test:///var/lib/sdmesh/hosts/embedded.xml",
        "qemu:///system",
        "qemu+ssh://root@host/system",
        "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
        "xen:///system",
        "libxl:///",
        "lxc:///",
        "vbox:///session",
    ],
)
def test_the_uri_alone_names_the_driver_libvirt_would(uri: str) -> None:
    assert uri_driver_kind(uri) == driver_kind("", uri)


def test_test_or_nothing_is_the_embedded_test_host() -> None:
    assert preliminary_meta("test", (), [], "http://x")["hypervisor"] == "test"
    assert preliminary_meta("", (), [], "http://x")["hypervisor"] == "test"


def test_preliminary_meta_has_the_same_keys_and_an_empty_capacity() -> None:
    full = member_meta(CAPS, CAPACITY, ("gpu",), ["a.qcow2"], "http://x")
    early = preliminary_meta("qemu:///system", ("gpu",), ["a.qcow2"], "http://x")
    assert early.keys() == full.keys()
    assert early["capacity"] == {}
    assert {k: v for k, v in early.items() if k not in ("capacity", "hypervisor")} == {
        k: v for k, v in full.items() if k not in ("capacity", "hypervisor")
    }


def test_free_disk_is_read_from_the_nearest_existing_directory(tmp_path: Path) -> None:
    free = disk_free_mib(tmp_path / "volumes" / "not-yet")
    assert free is not None and free > 0
    assert free == disk_free_mib(tmp_path)


def test_free_disk_is_gossiped_only_when_known() -> None:
    known = member_meta(CAPS, CAPACITY, (), [], "http://x", 4096)["capacity"]
    unknown = member_meta(CAPS, CAPACITY, (), [], "http://x")["capacity"]
    assert isinstance(known, dict) and known["disk_free_mib"] == 4096
    assert isinstance(unknown, dict) and "disk_free_mib" not in unknown


@pytest.mark.parametrize(
    ("announced", "measured", "gossiped"),
    [
        (None, 5000, 5000),  # the first figure
        (5000, None, 5000),  # statvfs failed: keep the last one
        (None, None, None),
        (5000, 5000 - 256, 5000),  # within 256 MiB: not worth a gossip round
        (5000, 5000 - 257, 4743),
        (5000, 5200, 5000),
        (1_000_000, 1_000_000 - 9_000, 1_000_000),  # within 1 %
        (1_000_000, 1_000_000 - 10_001, 989_999),
    ],
)
def test_free_disk_moves_in_coarse_steps(
    announced: int | None, measured: int | None, gossiped: int | None
) -> None:
    assert settled_disk_free(announced, measured) == gossiped
