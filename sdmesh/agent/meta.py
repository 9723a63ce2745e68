"""What a member tells the mesh about itself: capacity, hypervisor, labels, images, API."""

from __future__ import annotations

from pathlib import Path

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
