"""HypervisorDriver over libvirt-python, for any URI (test:///, qemu:///system, xen:///system).

One connection per driver. Blocking libvirt calls run on a small dedicated thread pool
(libvirt connections are thread-safe and libvirt-python releases the GIL), so the event
loop never waits on the hypervisor. Lifecycle events arrive through libvirtaio on the loop;
where they cannot (a driver without events, or libvirt's event loop bound elsewhere) the
driver polls and synthesises the same events from state differences.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Literal, TypeGuard, TypeVar

import libvirt

from sdmesh.hypervisor.admission import MemoryLedger, check_capacity
from sdmesh.hypervisor.capabilities import (
    HostCapabilities,
    HostCapacity,
    RenderTarget,
    build_capabilities,
    parse_guests,
    resolve_target,
)
from sdmesh.hypervisor.domain_xml import (
    SDMESH_NS,
    MalformedMetadata,
    build_domain_xml,
    parse_metadata,
)
from sdmesh.hypervisor.driver import HypervisorDriver, ManagedDomain
from sdmesh.hypervisor.errors import (
    DomainExists,
    HypervisorError,
    HypervisorUnavailable,
    InvalidSpec,
    NotManaged,
)
from sdmesh.hypervisor.event_loop import (
    bind_libvirt_events,
    drain_libvirt_events,
    silence_libvirt_stderr,
)
from sdmesh.hypervisor.events import (
    DomainEvent,
    DomainState,
    EventHub,
    EventKind,
    EventSource,
    EventSubscription,
    diff_states,
    lifecycle_event,
    state_from_code,
)
from sdmesh.hypervisor.libvirt_errors import is_code, translate
from sdmesh.hypervisor.spec import DomainSpec, SdmeshMetadata

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How long the events an own operation causes are awaited before being forgotten.
_EXPECTATION_TTL_S = 30.0
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)

EventsMode = Literal["auto", "poll"]
_RawEvent = tuple[str, EventKind, str, EventSource, float]


class LibvirtDriver(HypervisorDriver):
    """One libvirt host. ``async with LibvirtDriver("qemu:///system") as driver: ...``."""

    #: Told how long libvirt took to define, then to boot, each domain started
    #: (``("define", seconds)``, ``("start", seconds)``): the agent's deploy-phase metrics,
    #: which cannot see inside the one blocking call. Called from a worker thread.
    phase_observer: Callable[[str, float], None] | None = None

    def __init__(
        self,
        uri: str = "test:///default",
        *,
        max_workers: int = 4,
        reserve_memory_mib: int = 0,
        events: EventsMode = "auto",
        poll_interval_s: float = 2.0,
        ledger_ttl_s: float = 5.0,
        owner: str | None = None,
    ) -> None:
        self.uri = uri
        #: The agent this driver acts for. Several agents may share one libvirtd (tests, or
        #: two meshes on one machine): with an owner, the driver lists, reports events of and
        #: destroys only the domains whose metadata names it, so one agent never adopts,
        #: reconciles or reaps another's. None sees every sdmesh domain (``sdmesh run``).
        self.owner = owner
        self._max_workers = max_workers
        self._reserve_memory_mib = reserve_memory_mib
        self._events_mode = events
        self._poll_interval_s = poll_interval_s
        self._ledger_ttl_s = ledger_ttl_s
        self._conn: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._caps: HostCapabilities | None = None
        self._ledger = MemoryLedger()
        self._admission = asyncio.Lock()
        self._hub = EventHub()
        self._raw_events: asyncio.Queue[_RawEvent] = asyncio.Queue()
        self._known: dict[str, SdmeshMetadata] = {}
        self._expected: dict[str, tuple[set[EventKind], float]] = {}
        self._callback_id: int | None = None
        self._source: EventSource = "poll"
        self._tasks: list[asyncio.Task[None]] = []
        self._poll_snapshot: dict[str, tuple[DomainState, SdmeshMetadata]] = {}

    # ------------------------------------------------------------------ plumbing

    def _owns(self, metadata: SdmeshMetadata | None) -> TypeGuard[SdmeshMetadata]:
        """An sdmesh domain, and ours when this driver acts for an owner."""
        return metadata is not None and (self.owner is None or metadata.node == self.owner)

    async def _call(
        self, fn: Callable[..., _T], *args: Any, action: str, name: str | None = None
    ) -> _T:
        """Run a blocking libvirt call on the pool; libvirt errors become sdmesh errors."""
        if self._executor is None:
            raise HypervisorUnavailable(
                f"driver for {self.uri} is not open", hint="use `async with LibvirtDriver(...)`"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except libvirt.libvirtError as err:
            raise translate(err, action=action, uri=self.uri, name=name) from err

    @property
    def caps(self) -> HostCapabilities:
        if self._caps is None:
            raise HypervisorUnavailable(f"driver for {self.uri} is not open")
        return self._caps

    @property
    def event_source(self) -> EventSource:
        return self._source

    # ------------------------------------------------------------------ open / close

    async def open(self) -> None:
        if self._executor is not None:
            return
        silence_libvirt_stderr()
        loop = asyncio.get_running_loop()
        listen = self._events_mode == "auto" and bind_libvirt_events(loop)
        self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="libvirt")
        try:
            self._conn = await self._call(self._connect_sync, action="connecting")
            self._caps = await self._call(self._read_capabilities, action="reading capabilities")
            managed = await self._call(self._list_managed_sync, None, action="listing domains")
            for domain in managed:
                self._known[domain.name] = domain.metadata
            self._poll_snapshot = {d.name: (d.state, d.metadata) for d in managed}
            if listen:
                await self._register_events()
        except BaseException:
            await self._shutdown_connection()
            raise
        self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="libvirt-events"))
        if self._source == "poll":
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="libvirt-poll"))

    def _connect_sync(self) -> Any:
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            raise HypervisorUnavailable(
                f"cannot connect to {self.uri}: {err.get_error_message() or err}",
                hint="check the URI; for qemu:// or xen:// is libvirtd running with that "
                "driver installed (libvirt-daemon-driver-qemu / -xen), and may this user "
                "connect? test:///PATH needs an existing host XML file",
            ) from err

    async def _register_events(self) -> None:
        try:
            self._callback_id = await self._call(
                self._conn.domainEventRegisterAny,
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                self._on_lifecycle,
                None,
                action="registering for lifecycle events",
            )
            self._source = "libvirt"
        except HypervisorError as exc:
            _log.warning("%s has no lifecycle events (%s); polling instead", self.uri, exc)
            self._source = "poll"

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._hub.close()
        await self._shutdown_connection()

    async def _shutdown_connection(self) -> None:
        if self._conn is not None:
            if self._callback_id is not None:
                with contextlib.suppress(HypervisorError):
                    await self._call(
                        self._conn.domainEventDeregisterAny,
                        self._callback_id,
                        action="deregistering events",
                    )
                self._callback_id = None
            with contextlib.suppress(HypervisorError):
                await self._call(self._conn.close, action="disconnecting")
            self._conn = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        await drain_libvirt_events()

    # ------------------------------------------------------------------ capabilities

    def _read_capabilities(self) -> HostCapabilities:
        conn = self._conn
        caps_xml = conn.getCapabilities()
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        conn_type = conn.getType()
        _, guests = parse_guests(caps_xml)
        kvm = any("kvm" in guest.domain_types for guest in guests)
        domcaps: str | None = None
        if conn_type.upper() == "QEMU":
            with contextlib.suppress(libvirt.libvirtError):
                domcaps = conn.getDomainCapabilities(None, None, None, "kvm" if kvm else "qemu", 0)
        max_vcpus: int | None = None
        with contextlib.suppress(libvirt.libvirtError):
            max_vcpus = int(conn.getMaxVcpus(None))
        return build_capabilities(
            uri=self.uri,
            conn_type=conn_type,
            caps_xml=caps_xml,
            cpus=int(info[2]),
            memory_mib=int(info[1]),
            max_vcpus=max_vcpus,
            domcaps_xml=domcaps,
        )

    async def capabilities(self) -> HostCapabilities:
        return self.caps

    async def capacity(self) -> HostCapacity:
        caps = self.caps
        async with self._admission:
            await self._sync_ledger()
            committed = self._ledger.committed_mib()
        free: int | None = None
        if caps.driver != "test":  # the test driver's free memory is not meaningful
            free_bytes = await self._call(self._conn.getFreeMemory, action="reading free memory")
            free = int(free_bytes) // (1024 * 1024)
        return HostCapacity(caps.cpus, caps.memory_mib, free, committed)

    def _active_memory_sync(self) -> dict[str, int]:
        active: dict[str, int] = {}
        for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                active[dom.name()] = int(dom.maxMemory()) // 1024
            except libvirt.libvirtError as err:
                if not is_code(err, libvirt.VIR_ERR_NO_DOMAIN):
                    raise
        return active

    async def _sync_ledger(self) -> None:
        active = await self._call(self._active_memory_sync, action="counting committed memory")
        self._ledger.sync(active, time.monotonic())

    # ------------------------------------------------------------------ checks

    def _lookup_sync(self, name: str) -> tuple[bool, SdmeshMetadata | None]:
        """(exists, its sdmesh metadata or None when it is not ours)."""
        try:
            dom = self._conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if is_code(err, libvirt.VIR_ERR_NO_DOMAIN):
                return False, None
            raise
        return True, self._metadata_of(dom)

    @staticmethod
    def _exists_error(name: str, found: SdmeshMetadata | None) -> DomainExists:
        owner = (
            "a domain sdmesh does not manage"
            if found is None
            else f"pool {found.pool!r}, component {found.path!r}, generation {found.generation}"
            + (f", agent {found.node!r}" if found.node else "")
        )
        return DomainExists(
            f"domain {name!r} already exists ({owner})",
            hint="destroy it first, or adopt it through list_managed()",
        )

    async def _admit(self, spec: DomainSpec, *, reserve: bool) -> None:
        """Capacity check, and with ``reserve`` count the domain until it runs or fails."""
        async with self._admission:
            if self._ledger.is_stale(time.monotonic(), self._ledger_ttl_s):
                await self._sync_ledger()
            check_capacity(
                spec,
                self.caps,
                committed_mib=self._ledger.committed_mib(),
                reserve_mib=self._reserve_memory_mib,
            )
            if reserve:
                self._ledger.reserve(spec.name, spec.memory_mib)

    async def check(self, spec: DomainSpec) -> RenderTarget:
        spec.validate()
        target = resolve_target(spec, self.caps)
        await self._admit(spec, reserve=False)
        exists, owner = await self._call(
            self._lookup_sync, spec.name, action="looking up", name=spec.name
        )
        if exists:
            raise self._exists_error(spec.name, owner)
        return target

    # ------------------------------------------------------------------ define / destroy

    def _expect(self, name: str, *kinds: EventKind) -> None:
        """Our own operation on ``name`` will cause these events: they are not news."""
        pending, _ = self._expected.get(name, (set(), 0.0))
        self._expected[name] = (pending | set(kinds), time.monotonic() + _EXPECTATION_TTL_S)

    def _consume_expected(self, name: str, kind: EventKind) -> bool:
        entry = self._expected.get(name)
        if entry is None:
            return False
        pending, deadline = entry
        if deadline < time.monotonic():
            del self._expected[name]
            return False
        if kind not in pending:
            return False
        pending.discard(kind)
        # STARTED is the last event of a start, UNDEFINED the last of a destroy.
        if not pending or kind in (EventKind.STARTED, EventKind.UNDEFINED):
            del self._expected[name]
        return True

    def _define_and_start_sync(self, name: str, xml: str) -> tuple[str, DomainState]:
        exists, owner = self._lookup_sync(name)
        if exists:
            raise self._exists_error(name, owner)
        began = time.monotonic()
        dom = self._conn.defineXML(xml)
        defined = time.monotonic()
        try:
            dom.create()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()  # leave nothing half-created behind
            raise
        observer = self.phase_observer
        if observer is not None:
            with contextlib.suppress(Exception):  # metrics never fail a start
                observer("define", defined - began)
                observer("start", time.monotonic() - defined)
        return dom.UUIDString(), state_from_code(dom.state()[0])

    async def define_and_start(self, spec: DomainSpec, metadata: SdmeshMetadata) -> ManagedDomain:
        spec.validate()
        if self.owner is not None:
            if metadata.node is None:
                metadata = replace(metadata, node=self.owner)
            elif metadata.node != self.owner:
                raise InvalidSpec(
                    f"domain {spec.name} is for agent {metadata.node!r}; this driver acts "
                    f"for {self.owner!r}"
                )
        metadata.validate()
        target = resolve_target(spec, self.caps)
        if metadata.created_at is None:
            metadata = replace(metadata, created_at=time.time())
        xml = build_domain_xml(spec, metadata, target, validate=False)  # validated above
        await self._admit(spec, reserve=True)
        # QEMU also reports RESUMED as the vCPUs start (before STARTED).
        self._expect(spec.name, EventKind.DEFINED, EventKind.RESUMED, EventKind.STARTED)
        self._known[spec.name] = metadata
        try:
            uuid, state = await self._call(
                self._define_and_start_sync, spec.name, xml, action="starting", name=spec.name
            )
        except BaseException:
            self._ledger.cancel(spec.name)
            self._expect(spec.name, EventKind.STOPPED, EventKind.UNDEFINED)  # the rollback
            raise
        self._ledger.confirm(spec.name)
        return ManagedDomain(spec.name, uuid, state, metadata, spec.memory_mib, spec.vcpus)

    def _destroy_sync(self, name: str) -> bool:
        try:
            dom = self._conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if is_code(err, libvirt.VIR_ERR_NO_DOMAIN):
                return False
            raise
        metadata = self._metadata_of(dom)
        if metadata is None:
            raise NotManaged(
                f"domain {name!r} on {self.uri} was not created by sdmesh; leaving it alone",
                hint="remove it with virsh if it really must go",
            )
        if not self._owns(metadata):
            raise NotManaged(
                f"domain {name!r} on {self.uri} belongs to agent {metadata.node!r}, not "
                f"{self.owner!r}; leaving it alone",
                hint="that agent (or the reaper of that agent) removes it",
            )
        gone = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            if not is_code(err, *gone):  # not running, or vanished meanwhile
                raise
        try:
            dom.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as err:
            if is_code(err, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefine()
            elif not is_code(err, *gone):
                raise
        return True

    async def destroy(self, name: str) -> bool:
        self._expect(name, EventKind.STOPPED, EventKind.UNDEFINED)
        removed = await self._call(self._destroy_sync, name, action="destroying", name=name)
        self._ledger.forget(name)
        return removed

    # ------------------------------------------------------------------ listing

    @staticmethod
    def _metadata_of(dom: Any) -> SdmeshMetadata | None:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, SDMESH_NS)
        except libvirt.libvirtError as err:
            if is_code(err, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
                return None
            raise
        try:
            return parse_metadata(text)
        except MalformedMetadata as exc:
            _log.warning(
                "domain %s has unreadable sdmesh metadata (%s); ignoring it", dom.name(), exc
            )
            return None

    def _list_managed_sync(self, pool: str | None) -> list[ManagedDomain]:
        found: list[ManagedDomain] = []
        for dom in self._conn.listAllDomains(0):
            try:
                metadata = self._metadata_of(dom)
                if not self._owns(metadata) or (pool is not None and metadata.pool != pool):
                    continue
                info = dom.info()  # [state, max KiB, current KiB, vcpus, cpu time]
                found.append(
                    ManagedDomain(
                        name=dom.name(),
                        uuid=dom.UUIDString(),
                        state=state_from_code(info[0]),
                        metadata=metadata,
                        memory_mib=int(info[1]) // 1024,
                        vcpus=int(info[3]),
                    )
                )
            except libvirt.libvirtError as err:
                if not is_code(err, libvirt.VIR_ERR_NO_DOMAIN):  # vanished while listing
                    raise
        found.sort(key=lambda domain: domain.name)
        return found

    async def list_managed(self, pool: str | None = None) -> list[ManagedDomain]:
        managed = await self._call(self._list_managed_sync, pool, action="listing domains")
        for domain in managed:
            self._known[domain.name] = domain.metadata
        return managed

    def _state_sync(self, name: str) -> DomainState:
        try:
            return state_from_code(self._conn.lookupByName(name).state()[0])
        except libvirt.libvirtError as err:
            if is_code(err, libvirt.VIR_ERR_NO_DOMAIN):
                return DomainState.ABSENT
            raise

    async def domain_state(self, name: str) -> DomainState:
        return await self._call(self._state_sync, name, action="reading state", name=name)

    # ------------------------------------------------------------------ events

    def subscribe(self) -> EventSubscription:
        return self._hub.subscribe()

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        """libvirt callback, on the loop thread: queue it; never call libvirt from here."""
        try:
            mapped = lifecycle_event(event, detail)
            if mapped is not None:
                kind, text = mapped
                self._raw_events.put_nowait((dom.name(), kind, text, "libvirt", time.time()))
        except Exception:  # an exception here would only reach libvirt's stderr
            _log.exception("dropping a libvirt lifecycle event")

    def _lookup_metadata_sync(self, name: str) -> SdmeshMetadata | None:
        return self._lookup_sync(name)[1]

    async def _dispatch_loop(self) -> None:
        """Attach metadata to raw events (in order) and publish those of our domains."""
        while True:
            name, kind, detail, source, at = await self._raw_events.get()
            if kind in (EventKind.STOPPED, EventKind.UNDEFINED, EventKind.CRASHED):
                self._ledger.forget(name)
            metadata = self._known.get(name)
            if metadata is None and kind is not EventKind.UNDEFINED:
                try:
                    metadata = await self._call(
                        self._lookup_metadata_sync, name, action="reading metadata", name=name
                    )
                except HypervisorError as exc:
                    _log.warning("cannot tell whether %s is ours: %s", name, exc)
                if metadata is not None:
                    self._known[name] = metadata
            if kind is EventKind.UNDEFINED:
                self._known.pop(name, None)
            if not self._owns(metadata):
                continue  # not an sdmesh domain, or another agent's
            self._hub.publish(
                DomainEvent(
                    name, kind, detail, metadata, self._consume_expected(name, kind), source, at
                )
            )

    def _poll_states_sync(self) -> dict[str, tuple[DomainState, SdmeshMetadata]]:
        return {d.name: (d.state, d.metadata) for d in self._list_managed_sync(None)}

    async def _poll_loop(self) -> None:
        """For hosts without events: diff our domains' states and queue the same events."""
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.poll_now()
            except HypervisorError as exc:
                _log.warning("polling %s failed: %s", self.uri, exc)

    async def poll_now(self) -> None:
        """Poll once now (the poll loop's step; also for a caller that suspects lost events)."""
        current = await self._call(self._poll_states_sync, action="polling domains")
        before = {name: state for name, (state, _) in self._poll_snapshot.items()}
        after = {name: state for name, (state, _) in current.items()}
        for name, (_, metadata) in current.items():
            self._known.setdefault(name, metadata)
        now = time.time()
        for name, kind, detail in diff_states(before, after):
            self._raw_events.put_nowait((name, kind, detail, "poll", now))
        self._poll_snapshot = current
