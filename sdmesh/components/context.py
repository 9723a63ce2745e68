"""What every leaf component of one application shares on this host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdmesh.components.policy import HostPolicy, PolicyRefused
from sdmesh.hypervisor import DomainEvent, HostCapabilities, HypervisorDriver
from sdmesh.hypervisor.nocloud import NoCloudSeedStore
from sdmesh.language.values import NULL
from sdmesh.lifecycle.model import Node
from sdmesh.lifecycle.runtime import ResolutionError, resolve_attribute
from sdmesh.storage import StorageBackend, backend_named
from sdmesh.storage.model import VolumeKeeper
from sdmesh.storage.simulated import SimulatedStorageBackend

log = logging.getLogger(__name__)


@dataclass
class HostContext:
    """One application (pool) on one hypervisor host."""

    driver: HypervisorDriver
    caps: HostCapabilities
    state_dir: Path
    pool: str
    generation: int
    descriptor_hash: str
    node_name: str | None = None
    warn: Callable[[str, str], None] = lambda path, message: log.warning("%s: %s", path, message)
    #: QEMU hosts: "kvm" (accelerated) or "qemu" (TCG); SDMESH_VIRT_TYPE overrides.
    virt_type: str = field(default_factory=lambda: os.environ.get("SDMESH_VIRT_TYPE", ""))
    #: What descriptors may name on this host (sdmesh.components.policy); deny by default.
    policy: HostPolicy = field(default_factory=HostPolicy)
    _backends: dict[str, StorageBackend] = field(default_factory=dict)
    _seeds: NoCloudSeedStore | None = None
    _watchers: dict[str, Callable[[DomainEvent], None]] = field(default_factory=dict)
    _events_task: asyncio.Task[None] | None = None

    @property
    def simulated(self) -> bool:
        """libvirt's test driver: disks are placeholders, kernels are never read."""
        return self.caps.driver == "test"

    @property
    def console_root(self) -> Path:
        """Where every pool's console logs live, under the state directory (0700)."""
        return self.state_dir / "console"

    @property
    def console_dir(self) -> Path:
        """This pool's console logs live here (0700), whatever the descriptor says: one
        directory per pool, so a pool's ``consoleLog`` can never name (and QEMU append to)
        another pool's log. Pool ids never are ``.`` or ``..`` (they start with a letter or
        a digit), and a name that could be is refused rather than joined."""
        if self.pool in ("", ".", "..") or "/" in self.pool or "\0" in self.pool:
            raise PolicyRefused(f"pool id {self.pool!r} cannot name a console directory")
        return self.console_root / self.pool

    def storage(self, component: str) -> StorageBackend:
        """The backend for a storage component class (simulated on test-driver hosts)."""
        key = "simulated" if self.simulated else component
        backend = self._backends.get(key)
        if backend is None:
            if self.simulated:
                backend = SimulatedStorageBackend(self.state_dir)
            else:
                backend = backend_named(component, self.state_dir)
            self._backends[key] = backend
        return backend

    def seeds(self) -> NoCloudSeedStore:
        if self._seeds is None:
            self._seeds = NoCloudSeedStore(self.state_dir)
        return self._seeds

    def keepers(self) -> list[VolumeKeeper]:
        """Everything that creates volumes here, for the reaper."""
        keepers: list[VolumeKeeper] = [self.seeds()]
        if self.simulated:
            keepers.append(self.storage("SimulatedStorageBackend"))
        else:
            from sdmesh.storage import (
                LoopbackStorageBackend,
                LVMStorageBackend,
                Qcow2OverlayBackend,
            )

            for cls in (Qcow2OverlayBackend, LoopbackStorageBackend, LVMStorageBackend):
                keepers.append(cls(self.state_dir))
        return keepers

    # --------------------------------------------------------------------- domain events
    def watch(self, domain: str, callback: Callable[[DomainEvent], None]) -> None:
        """Call ``callback`` for each lifecycle event of ``domain`` (until unwatch)."""
        self._watchers[domain] = callback
        if self._events_task is None:
            self._events_task = asyncio.get_running_loop().create_task(self._dispatch())

    def unwatch(self, domain: str) -> None:
        self._watchers.pop(domain, None)

    async def _dispatch(self) -> None:
        async with self.driver.subscribe() as events:
            async for event in events:
                callback = self._watchers.get(event.name)
                if callback is not None:
                    callback(event)

    async def close(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await self._events_task
            self._events_task = None


def value(root: Node, node: Node, name: str, default: object = None) -> object:
    """An attribute's current value, LAZY links followed; ``default`` when absent."""
    if name not in node.description.attrs:
        return default
    try:
        return resolve_attribute(root, node, name)
    except ResolutionError as error:
        from sdmesh.runner.app import ComponentError

        raise ComponentError(str(error)) from None


def text(root: Node, node: Node, name: str) -> str | None:
    found = value(root, node, name)
    if found is None or found is NULL:
        return None
    if not isinstance(found, str):
        from sdmesh.runner.app import ComponentError

        raise ComponentError(f"'{name}' must be a String")
    return found
