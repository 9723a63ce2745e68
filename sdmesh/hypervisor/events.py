"""Domain lifecycle events: values, libvirt code mapping, poll diffing, fan-out to subscribers.

Events are hints, not the truth: libvirt drops them across reconnects and a poll sees only
the net change between two looks. Consumers reconcile with ``list_managed()`` when in doubt.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sdmesh.hypervisor.spec import SdmeshMetadata


class DomainState(enum.Enum):
    """libvirt's domain states, plus ABSENT for a domain that does not exist."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    ABSENT = "absent"

    @property
    def active(self) -> bool:
        return self in _ACTIVE


_ACTIVE = frozenset(
    {
        DomainState.RUNNING,
        DomainState.BLOCKED,
        DomainState.PAUSED,
        DomainState.SHUTDOWN,
        DomainState.PMSUSPENDED,
    }
)

#: virDomainState codes, in libvirt's order.
_STATES = (
    DomainState.NOSTATE,
    DomainState.RUNNING,
    DomainState.BLOCKED,
    DomainState.PAUSED,
    DomainState.SHUTDOWN,
    DomainState.SHUTOFF,
    DomainState.CRASHED,
    DomainState.PMSUSPENDED,
)


def state_from_code(code: int) -> DomainState:
    return _STATES[code] if 0 <= code < len(_STATES) else DomainState.NOSTATE


class EventKind(enum.Enum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"  # the guest is shutting itself down
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"


#: virDomainEventType codes, in libvirt's order.
_KINDS = (
    EventKind.DEFINED,
    EventKind.UNDEFINED,
    EventKind.STARTED,
    EventKind.SUSPENDED,
    EventKind.RESUMED,
    EventKind.STOPPED,
    EventKind.SHUTDOWN,
    EventKind.PMSUSPENDED,
    EventKind.CRASHED,
)

#: Detail codes per event type (virDomainEvent*DetailType); unknown codes keep their number.
_DETAILS: dict[EventKind, tuple[str, ...]] = {
    EventKind.DEFINED: ("added", "updated", "renamed", "from-snapshot"),
    EventKind.UNDEFINED: ("removed", "renamed"),
    EventKind.STARTED: ("booted", "migrated", "restored", "from-snapshot", "wakeup"),
    EventKind.SUSPENDED: (
        "paused",
        "migrated",
        "io-error",
        "watchdog",
        "restored",
        "from-snapshot",
        "api-error",
        "postcopy",
        "postcopy-failed",
    ),
    EventKind.RESUMED: ("unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"),
    EventKind.STOPPED: (
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from-snapshot",
    ),
    EventKind.SHUTDOWN: ("finished", "guest", "host"),
    EventKind.PMSUSPENDED: ("memory", "disk"),
    EventKind.CRASHED: ("panicked", "crashloaded"),
}


def lifecycle_event(event_code: int, detail_code: int) -> tuple[EventKind, str] | None:
    """(kind, detail) for a libvirt lifecycle callback, None for a type we do not know."""
    if not 0 <= event_code < len(_KINDS):
        return None
    kind = _KINDS[event_code]
    details = _DETAILS[kind]
    detail = details[detail_code] if 0 <= detail_code < len(details) else str(detail_code)
    return kind, detail


EventSource = Literal["libvirt", "poll"]


@dataclass(frozen=True)
class DomainEvent:
    """Something happened to an sdmesh domain."""

    name: str
    kind: EventKind
    detail: str
    metadata: SdmeshMetadata
    by_us: bool  # caused by this driver's own define/start/destroy
    source: EventSource
    at: float  # wall-clock seconds

    @property
    def is_failure(self) -> bool:
        """The guest died on its own (crash, or the hypervisor failed it)."""
        if self.kind is EventKind.CRASHED:
            return True
        return self.kind is EventKind.STOPPED and self.detail in ("crashed", "failed")

    @property
    def is_external_stop(self) -> bool:
        """Stopped or removed by someone other than this driver (admin, another tool, a crash)."""
        return not self.by_us and self.kind in (EventKind.STOPPED, EventKind.UNDEFINED)


# --------------------------------------------------------------------------- polling


def diff_states(
    before: Mapping[str, DomainState], after: Mapping[str, DomainState]
) -> list[tuple[str, EventKind, str]]:
    """Events that explain the change between two polls of our domains."""
    events: list[tuple[str, EventKind, str]] = []
    for name, state in after.items():
        old = before.get(name)
        if old is None:
            events.append((name, EventKind.DEFINED, "added"))
            if state.active:
                events.append((name, EventKind.STARTED, "booted"))
        elif old.active and not state.active:
            if state is DomainState.CRASHED:
                events.append((name, EventKind.CRASHED, "panicked"))
            else:
                events.append((name, EventKind.STOPPED, "shutdown"))
        elif not old.active and state.active:
            events.append((name, EventKind.STARTED, "booted"))
        elif old is not DomainState.PAUSED and state is DomainState.PAUSED:
            events.append((name, EventKind.SUSPENDED, "paused"))
        elif old is DomainState.PAUSED and state.active and state is not DomainState.PAUSED:
            events.append((name, EventKind.RESUMED, "unpaused"))
    for name, old in before.items():
        if name not in after:
            if old.active:
                events.append((name, EventKind.STOPPED, "destroyed"))
            events.append((name, EventKind.UNDEFINED, "removed"))
    return events


# --------------------------------------------------------------------------- fan-out


class EventSubscription:
    """One consumer's queue of events: ``async for event in subscription``."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[DomainEvent | None] = asyncio.Queue()
        self.closed = False

    def _put(self, event: DomainEvent | None) -> None:
        self._queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> DomainEvent:
        """The next event; TimeoutError after ``timeout``; StopAsyncIteration once closed."""
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        event = await asyncio.wait_for(self._queue.get(), timeout)
        if event is None:
            self.closed = True
            raise StopAsyncIteration
        return event

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> DomainEvent:
        return await self.get()

    def close(self) -> None:
        if not self.closed:
            self._hub.unsubscribe(self)
            self._put(None)

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Delivers every event to every current subscriber."""

    def __init__(self) -> None:
        self._subscribers: list[EventSubscription] = []

    def subscribe(self) -> EventSubscription:
        subscription = EventSubscription(self)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: EventSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def publish(self, event: DomainEvent) -> None:
        for subscription in self._subscribers:
            subscription._put(event)

    def close(self) -> None:
        for subscription in list(self._subscribers):
            subscription.close()
