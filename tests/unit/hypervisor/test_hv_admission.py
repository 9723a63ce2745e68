"""Admission: the memory ledger and the capacity check."""

from __future__ import annotations

import pytest

from sdmesh.hypervisor.admission import MemoryLedger, check_capacity
from sdmesh.hypervisor.capabilities import build_capabilities
from sdmesh.hypervisor.errors import InsufficientResources
from sdmesh.hypervisor.spec import DomainSpec, KernelBoot

CAPS = build_capabilities(
    uri="test:///h", conn_type="TEST", caps_xml="<capabilities/>", cpus=4, memory_mib=1024
)


def vm(name: str = "vm", memory: int = 256, vcpus: int = 1) -> DomainSpec:
    return DomainSpec(name=name, memory_mib=memory, vcpus=vcpus, boot=KernelBoot("/k"))


def test_ledger_counts_snapshot_plus_pending_once() -> None:
    ledger = MemoryLedger()
    assert ledger.is_stale(0.0, 5.0)
    ledger.sync({"a": 100, "b": 200}, now=10.0)
    assert not ledger.is_stale(12.0, 5.0) and ledger.is_stale(15.0, 5.0)
    ledger.reserve("c", 50)
    assert ledger.committed_mib() == 350
    ledger.sync({"a": 100, "b": 200, "c": 50}, now=11.0)  # c shows up while still pending
    assert ledger.committed_mib() == 350
    ledger.confirm("c")
    ledger.forget("a")
    assert ledger.committed_mib() == 250
    ledger.reserve("d", 10)
    ledger.cancel("d")
    assert ledger.committed_mib() == 250


def test_capacity_check() -> None:
    check_capacity(vm(memory=1024), CAPS, committed_mib=0)
    with pytest.raises(InsufficientResources, match="512 MiB are available"):
        check_capacity(vm(memory=600), CAPS, committed_mib=256, reserve_mib=256)
    with pytest.raises(InsufficientResources, match="4 CPUs"):
        check_capacity(vm(vcpus=5), CAPS, committed_mib=0)
