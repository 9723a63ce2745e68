"""The hypervisor boundary the lifecycle layer talks to, independent of libvirt.

Call order for one VirtualMachine component::

    caps = await driver.capabilities()
    await driver.check(spec)                      # host-side checks; creates nothing
    volume = await backend.prepare(request)       # storage, after the check passed
    await driver.define_and_start(spec, metadata) # spec includes DiskSpec.from_volume(volume)
    ...
    await driver.destroy(spec.name)               # idempotent
    await backend.release(volume)

After a restart, ``list_managed()`` rebuilds every sdmesh domain (pool, component path,
generation, descriptor hash) from the hypervisor alone.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sdmesh.hypervisor.capabilities import HostCapabilities, HostCapacity, RenderTarget
from sdmesh.hypervisor.events import DomainState, EventSource, EventSubscription
from sdmesh.hypervisor.spec import DomainSpec, SdmeshMetadata


@dataclass(frozen=True)
class ManagedDomain:
    """A domain sdmesh created, as the hypervisor reports it."""

    name: str
    uuid: str
    state: DomainState
    metadata: SdmeshMetadata
    memory_mib: int
    vcpus: int


class HypervisorDriver(abc.ABC):
    """One hypervisor host, driven asynchronously; every method is safe to call concurrently."""

    uri: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, read capabilities, start event delivery."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop event delivery and disconnect; subscriptions end."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def capabilities(self) -> HostCapabilities:
        """Static flags of the host (read once per connection)."""

    @abc.abstractmethod
    async def capacity(self) -> HostCapacity:
        """CPUs, memory, free memory and memory committed to running domains, now."""

    @abc.abstractmethod
    async def check(self, spec: DomainSpec) -> RenderTarget:
        """Every check ``define_and_start`` makes before it creates anything.

        Raises InvalidSpec, UnsupportedCapability, InsufficientResources or DomainExists.
        """

    @abc.abstractmethod
    async def define_and_start(self, spec: DomainSpec, metadata: SdmeshMetadata) -> ManagedDomain:
        """Define a persistent domain carrying ``metadata`` and boot it.

        On failure nothing is left defined. Raises DomainExists when the name is taken.
        """

    @abc.abstractmethod
    async def destroy(self, name: str) -> bool:
        """Power off and undefine an sdmesh domain; False when it was already gone.

        Raises NotManaged for a domain sdmesh did not create: those are never touched.
        """

    @abc.abstractmethod
    async def list_managed(self, pool: str | None = None) -> list[ManagedDomain]:
        """sdmesh domains on the host (of one pool, or all), rebuilt from their metadata."""

    @abc.abstractmethod
    async def domain_state(self, name: str) -> DomainState:
        """Current state; DomainState.ABSENT when no such domain exists."""

    @abc.abstractmethod
    def subscribe(self) -> EventSubscription:
        """A stream of lifecycle events of sdmesh domains on this host."""

    @property
    @abc.abstractmethod
    def event_source(self) -> EventSource:
        """``libvirt`` when events come from libvirt callbacks, ``poll`` when polled."""
