"""Disk-aware placement: units ask for their file-backed disks' declared sizes, hosts offer
the free disk they gossip, and placement never gives a host more than it says it has free."""

from __future__ import annotations

import pytest

from sdmesh.language import DescriptorError, resolve_text
from sdmesh.pools.layout import LayoutError, layout
from sdmesh.pools.placement import Demand, HostOffer, place
from sdmesh.storage import parse_size

GIB = 1024


def host(name: str, disk_free: int | None, memory: int = 1 << 20) -> HostOffer:
    return HostOffer(name, 64, memory, memory, disk_free_mib=disk_free)


def unit(i: int, disk: int, **extra: object) -> Demand:
    return Demand(f"sfConfig:pool:vm{i}", 1, 256, disk_mib=disk, **extra)  # type: ignore[arg-type]


def test_a_host_without_the_disk_is_refused_with_the_figures() -> None:
    plan = place([unit(0, 10 * GIB)], [host("a", 2 * GIB)])
    (unplaced,) = plan.unplaced
    assert unplaced.reason == "fits on no host (a needs 10240 MiB of disk, 2048 MiB free)"
    pinned = place([unit(0, 10 * GIB, pinned="a")], [host("a", 2 * GIB)])
    assert pinned.unplaced[0].reason == "a needs 10240 MiB of disk, 2048 MiB free"


def test_the_host_with_the_disk_is_chosen() -> None:
    plan = place([unit(0, 10 * GIB)], [host("a", 2 * GIB), host("b", 20 * GIB)])
    assert plan.assignments == {"sfConfig:pool:vm0": "b"}
    exact = place([unit(0, 10 * GIB)], [host("a", 10 * GIB)])
    assert exact.complete


def test_units_on_one_host_add_up() -> None:
    plan = place([unit(i, 4 * GIB, policy="pack") for i in range(3)], [host("a", 10 * GIB)])
    assert list(plan.assignments) == ["sfConfig:pool:vm0", "sfConfig:pool:vm1"]
    (unplaced,) = plan.unplaced
    assert unplaced.reason == "fits on no host (a needs 4096 MiB of disk, 2048 MiB free)"
    # Spread over two hosts, the same three fit.
    two = place([unit(i, 4 * GIB) for i in range(3)], [host("a", 10 * GIB), host("b", 5 * GIB)])
    assert two.complete and sorted(two.assignments.values()) == ["a", "a", "b"]


def test_already_placed_units_take_their_disk_first() -> None:
    demands = [unit(0, 8 * GIB), unit(1, 8 * GIB)]
    plan = place(demands, [host("a", 10 * GIB)], already={"sfConfig:pool:vm0": "a"})
    assert plan.assignments == {"sfConfig:pool:vm0": "a"}
    assert "a needs 8192 MiB of disk, 2048 MiB free" in plan.unplaced[0].reason


def test_a_member_that_does_not_say_is_not_checked() -> None:
    plan = place([unit(i, 1 << 30) for i in range(3)], [host("old", None)])
    assert plan.complete
    # And a unit declaring no disk fits on a full host.
    assert place([unit(0, 0)], [host("full", 0)]).complete


def pool(*disks: str, vm_extra: str = "") -> str:
    """One VM linked to each of ``disks`` (component bodies), through storageBackend first."""
    links = ["storageBackend"] + [f"data{i}" for i in range(1, len(disks))]
    declared = "\n".join(f"    d{i} extends {body}" for i, body in enumerate(disks))
    linked = " ".join(f"{link} LAZY ATTRIB d{i};" for i, link in enumerate(links))
    return f"""
#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {{
{declared}
    vm extends KvmDomain {{ {linked} {vm_extra} }}
}}"""


def disk_mib(text: str) -> int:
    return layout(resolve_text(text).root).units["sfConfig:vm"].demand.disk_mib


QCOW2 = 'Qcow2OverlayBackend { baseImage "/img/base.qcow2"; '
LOOP = 'LoopbackStorageBackend { baseImage "/img/base.img"; '
LVM = 'LVMStorageBackend { baseImage "vg0/base"; '


@pytest.mark.parametrize(
    ("size", "mib"),
    [("512M", 512), ("10G", 10240), ("1T", 1 << 20), ("2GiB", 2048), ("1048576", 1), ("1", 1)],
)
def test_layout_reads_the_declared_size(size: str, mib: int) -> None:
    assert disk_mib(pool(QCOW2 + f'size "{size}"; }}')) == mib


def test_a_unit_with_two_disks_needs_both_and_lvm_is_not_counted() -> None:
    text = pool(QCOW2 + 'size "10G"; }', LOOP + 'size "512M"; }', LVM + 'size "100G"; }')
    cut = layout(resolve_text(text).root)
    assert cut.units["sfConfig:vm"].leaves[:3] == ("sfConfig:d0", "sfConfig:d1", "sfConfig:d2")
    assert cut.units["sfConfig:vm"].demand.disk_mib == 10240 + 512


def test_an_undeclared_size_counts_nothing() -> None:
    assert disk_mib(pool(QCOW2 + "}", LOOP + "}")) == 0


def test_a_bad_size_is_a_layout_error_naming_the_disk() -> None:
    with pytest.raises(LayoutError, match=r"sfConfig:d0: size '10 gigs' is not a whole number"):
        disk_mib(pool(QCOW2 + 'size "10 gigs"; }'))
    with pytest.raises(LayoutError, match="must be positive"):
        disk_mib(pool(QCOW2 + 'size "0G"; }'))


def test_the_schema_refuses_a_size_that_is_not_a_string() -> None:
    with pytest.raises(DescriptorError, match="must be a String"):
        resolve_text(pool(QCOW2 + "size 10; }"))


def test_parse_size_uses_binary_units_like_qemu_img() -> None:
    assert parse_size("10G") == 10 << 30
    assert parse_size("10g") == parse_size("10GB") == parse_size(" 10 GiB ") == 10 << 30
    assert parse_size("4096") == 4096
    for bad in ("", "G", "1.5G", "-1G", "10X", "10 G B"):
        with pytest.raises(ValueError, match="not a whole number"):
            parse_size(bad)
