"""What a member tells the mesh about itself: capacity, hypervisor, labels, images, API."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sdmesh.pools.ownership import WITNESS_KEY

if TYPE_CHECKING:  # importing sdmesh.hypervisor loads libvirt: the agent does it later
    from sdmesh.hypervisor import HostCapabilities, HostCapacity

IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")
MIB = 1 << 20
#: Free disk is re-announced only when it moves by more than this or 1 % of the announced
#: figure: guests writing to their disks change it every second, and each announce is gossiped
#: to every member. Placement may thus see a figure up to this much off; the backend creating
#: a disk on the host is the last word.
DISK_SLACK_MIB = 256


def base_images(directory: Path | None) -> list[str]:
    """Base images this host holds (file names in the images directory), sorted."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix in IMAGE_SUFFIXES)[:64]


def disk_free_mib(directory: Path) -> int | None:
    """Free MiB (for unprivileged users) of the filesystem holding ``directory``, or of its
    nearest existing parent (the volumes directory appears with the first disk); None when
    it cannot be read. One statvfs: cheap enough for the event loop."""
    for candidate in (directory, *directory.parents):
        if candidate.is_dir():
            try:
                return shutil.disk_usage(candidate).free // MIB
            except OSError:
                return None
    return None


def settled_disk_free(announced: int | None, measured: int | None) -> int | None:
    """The free disk figure to gossip: ``announced`` until ``measured`` moves away from it by
    more than ``DISK_SLACK_MIB`` or 1 % (so disk churn does not re-announce every period);
    the last figure is kept when the measure failed."""
    if measured is None or announced is None:
        return announced if measured is None else measured
    if abs(measured - announced) > max(DISK_SLACK_MIB, announced // 100):
        return measured
    return announced


def member_meta(
    caps: HostCapabilities,
    capacity: HostCapacity,
    labels: tuple[str, ...],
    images: list[str],
    api: str,
    disk_free: int | None = None,
    shell: bool = False,
) -> dict[str, object]:
    """Kept small: it rides on every alive message (a datagram of ~1.3 KB). ``disk_free``
    (MiB free where the agent keeps its volumes) is left out when unknown; ``shell`` (the
    host's allow-shell, for placement) only when true."""
    figures: dict[str, object] = {
        "vcpus": caps.cpus,
        "memory_mib": caps.memory_mib,
        "memory_free_mib": capacity.free_memory_mib,
        "memory_committed_mib": capacity.committed_memory_mib,
    }
    if disk_free is not None:
        figures["disk_free_mib"] = disk_free
    meta: dict[str, object] = {
        "capacity": figures,
        "hypervisor": caps.driver,
        "labels": list(labels),
        "images": images,
        "api": api,
    }
    if shell:
        meta["shell"] = True
    return meta


def preliminary_meta(
    hypervisor: str, labels: tuple[str, ...], images: list[str], api: str, shell: bool = False
) -> dict[str, object]:
    """What the agent says before its hypervisor is open: ``member_meta``'s keys, an empty
    capacity, and the hypervisor type as the URI names it (``--hypervisor``; "test" or
    empty is the embedded test host). The agent replaces it once it knows the capacity."""
    meta: dict[str, object] = {
        "capacity": {},
        "hypervisor": uri_driver_kind(hypervisor or "test"),
        "labels": list(labels),
        "images": images,
        "api": api,
    }
    if shell:
        meta["shell"] = True
    return meta


def witness_meta(labels: tuple[str, ...], api: str) -> dict[str, object]:
    """A witness's metadata: no capacity and no hypervisor (placement finds nothing to offer
    there), and the flag that keeps it from shepherding (sdmesh.pools.ownership)."""
    return {
        "capacity": {},
        "hypervisor": "none",
        "labels": list(labels),
        "images": [],
        "api": api,
        WITNESS_KEY: True,
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
