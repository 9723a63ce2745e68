"""Host admission: does a domain fit in what the host has left?

libvirt does not refuse memory overcommit (neither QEMU nor the test driver does; guests
are OOM-killed later instead), so sdmesh checks itself: requested memory must fit in the
host's memory minus a reserve minus what running domains already have. Counting running
domains costs one libvirt call per domain, so the ledger keeps a snapshot taken at most
every few seconds and adds its own admissions since; names are the keys, so a domain is
never counted twice when it shows up in the next snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdmesh.hypervisor.capabilities import HostCapabilities
from sdmesh.hypervisor.errors import InsufficientResources
from sdmesh.hypervisor.spec import DomainSpec


class MemoryLedger:
    """Memory committed to running domains of one host, in MiB.

    Totals are kept up to date by every change, so an admission costs O(1) however many
    domains the host runs (summing on each admission made starting N domains O(N^2)).
    """

    def __init__(self) -> None:
        self._active: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._active_total = 0
        self._pending_total = 0  # pending domains not yet in the active snapshot
        self.synced_at: float | None = None

    def is_stale(self, now: float, ttl_s: float) -> bool:
        return self.synced_at is None or now - self.synced_at >= ttl_s

    def sync(self, active: Mapping[str, int], now: float) -> None:
        """Replace the snapshot by what libvirt reports as running now."""
        self._active = dict(active)
        self._active_total = sum(self._active.values())
        self._pending_total = sum(
            mib for name, mib in self._pending.items() if name not in self._active
        )
        self.synced_at = now

    def committed_mib(self) -> int:
        return self._active_total + self._pending_total

    def reserve(self, name: str, memory_mib: int) -> None:
        """Count a domain while it is being started (before libvirt lists it)."""
        self._drop_pending(name)
        self._pending[name] = memory_mib
        if name not in self._active:
            self._pending_total += memory_mib

    def confirm(self, name: str) -> None:
        memory = self._drop_pending(name)
        if memory is not None:
            self._active_total += memory - self._active.get(name, 0)
            self._active[name] = memory

    def cancel(self, name: str) -> None:
        self._drop_pending(name)

    def forget(self, name: str) -> None:
        """The domain stopped or was destroyed."""
        self._drop_pending(name)
        self._active_total -= self._active.pop(name, 0)

    def _drop_pending(self, name: str) -> int | None:
        memory = self._pending.pop(name, None)
        if memory is not None and name not in self._active:
            self._pending_total -= memory
        return memory


def check_capacity(
    spec: DomainSpec, caps: HostCapabilities, *, committed_mib: int, reserve_mib: int = 0
) -> None:
    """Raise InsufficientResources when ``spec`` does not fit on the host now."""
    if spec.vcpus > caps.cpus:
        raise InsufficientResources(
            f"{spec.name} asks for {spec.vcpus} vCPUs; host {caps.uri} has {caps.cpus} CPUs",
            hint="lower vcpus, or let placement choose a larger host",
        )
    available = caps.memory_mib - reserve_mib - committed_mib
    if spec.memory_mib > available:
        raise InsufficientResources(
            f"{spec.name} needs {spec.memory_mib} MiB; host {caps.uri} has {caps.memory_mib} "
            f"MiB, {committed_mib} MiB committed to running domains and {reserve_mib} MiB "
            f"reserved, so {max(available, 0)} MiB are available",
            hint="stop domains on this host, lower memory, or let placement choose another host",
        )
