"""The hypervisor boundary: typed domain specs, libvirt driver, capabilities, reaper.

The lifecycle layer builds a :class:`DomainSpec` and an :class:`SdmeshMetadata` for each
VirtualMachine component and hands them to a :class:`HypervisorDriver` (``LibvirtDriver``
for any libvirt URI). See :mod:`sdmesh.hypervisor.driver` for the call order.
"""

from __future__ import annotations

from sdmesh.hypervisor.capabilities import HostCapabilities, HostCapacity, RenderTarget
from sdmesh.hypervisor.driver import HypervisorDriver, ManagedDomain
from sdmesh.hypervisor.errors import (
    DomainExists,
    HypervisorError,
    HypervisorUnavailable,
    InsufficientResources,
    InvalidSpec,
    NotFound,
    NotManaged,
    UnsupportedCapability,
)
from sdmesh.hypervisor.events import DomainEvent, DomainState, EventKind, EventSubscription
from sdmesh.hypervisor.libvirt_driver import LibvirtDriver
from sdmesh.hypervisor.spec import (
    DiskBoot,
    DiskSpec,
    DomainSpec,
    GuestIdentity,
    KernelBoot,
    NicSpec,
    SdmeshMetadata,
    derive_mac,
    disk_bus_for,
    disk_target_for,
    domain_name_for,
    kernel_ip_argument,
)

__all__ = [
    "DiskBoot",
    "DiskSpec",
    "DomainEvent",
    "DomainExists",
    "DomainSpec",
    "DomainState",
    "EventKind",
    "EventSubscription",
    "GuestIdentity",
    "HostCapabilities",
    "HostCapacity",
    "HypervisorDriver",
    "HypervisorError",
    "HypervisorUnavailable",
    "InsufficientResources",
    "InvalidSpec",
    "KernelBoot",
    "LibvirtDriver",
    "ManagedDomain",
    "NicSpec",
    "NotFound",
    "NotManaged",
    "RenderTarget",
    "SdmeshMetadata",
    "UnsupportedCapability",
    "derive_mac",
    "disk_bus_for",
    "disk_target_for",
    "domain_name_for",
    "kernel_ip_argument",
]
