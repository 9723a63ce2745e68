"""What a member tells the mesh about itself: capacity, hypervisor, labels, images, API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # importing sdmesh.hypervisor loads libvirt: the agent does it later
    from sdmesh.hypervisor import HostCapabilities, HostCapacity

IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")


def base_images(directory: Path | None) -> list[str]:
    """Base images this host holds (file names in the images directory), sorted."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix in IMAGE_SUFFIXES)[:64]


def member_meta(
    caps: HostCapabilities,
    capacity: HostCapacity,
    labels: tuple[str, ...],
    images: list[str],
    api: str,
) -> dict[str, object]:
    """Kept small: it rides on every alive message (a datagram of ~1.3 KB)."""
    return {
        "capacity": {
            "vcpus": caps.cpus,
            "memory_mib": caps.memory_mib,
            "memory_free_mib": capacity.free_memory_mib,
            "memory_committed_mib": capacity.committed_memory_mib,
        },
        "hypervisor": caps.driver,
        "labels": list(labels),
        "images": images,
        "api": api,
    }


def preliminary_meta(
    hypervisor: str, labels: tuple[str, ...], images: list[str], api: str
) -> dict[str, object]:
    """What the agent says before its hypervisor is open: ``member_meta``'s keys, an empty
    capacity, and the hypervisor type as the URI names it (``--hypervisor``; "test" or
    empty is the embedded test host). The agent replaces it once it knows the capacity."""
    return {
        "capacity": {},
        "hypervisor": uri_driver_kind(hypervisor or "test"),
        "labels": list(labels),
        "images": images,
        "api": api,
    }


def uri_driver_kind(uri: str) -> str:
    """The driver a libvirt URI names, by its scheme alone: qemu, xen, test or other.

    sdmesh.hypervisor.capabilities.driver_kind without a connection (it also asks libvirt);
    the two agree on every URI whose scheme names the driver.
    """
    scheme = urlsplit(uri).scheme.split("+")[0].lower() or uri.strip().lower()
    if scheme == "qemu":
        return "qemu"
    if scheme in ("xen", "libxl"):
        return "xen"
    if scheme == "test":
        return "test"
    return "other"
