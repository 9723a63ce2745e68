"""Event values: libvirt code mapping, poll diffs, fan-out."""

from __future__ import annotations

import asyncio

import pytest

from sdmesh.hypervisor.events import (
    DomainEvent,
    DomainState,
    EventHub,
    EventKind,
    diff_states,
    lifecycle_event,
    state_from_code,
)
from sdmesh.hypervisor.spec import SdmeshMetadata

META = SdmeshMetadata("p", "a", 1, "sha256:" + "0" * 64)


def event(kind: EventKind, detail: str = "", by_us: bool = False) -> DomainEvent:
    return DomainEvent("vm", kind, detail, META, by_us, "libvirt", 0.0)


def test_lifecycle_codes() -> None:
    assert lifecycle_event(0, 0) == (EventKind.DEFINED, "added")
    assert lifecycle_event(2, 0) == (EventKind.STARTED, "booted")
    assert lifecycle_event(5, 1) == (EventKind.STOPPED, "destroyed")
    assert lifecycle_event(5, 2) == (EventKind.STOPPED, "crashed")
    assert lifecycle_event(1, 0) == (EventKind.UNDEFINED, "removed")
    assert lifecycle_event(8, 0) == (EventKind.CRASHED, "panicked")
    assert lifecycle_event(5, 99) == (EventKind.STOPPED, "99")
    assert lifecycle_event(42, 0) is None
    assert state_from_code(1) is DomainState.RUNNING and state_from_code(5) is DomainState.SHUTOFF
    assert state_from_code(77) is DomainState.NOSTATE


def test_event_predicates() -> None:
    assert event(EventKind.STOPPED, "crashed").is_failure
    assert event(EventKind.CRASHED).is_failure
    assert not event(EventKind.STOPPED, "destroyed").is_failure
    assert event(EventKind.STOPPED, "destroyed").is_external_stop
    assert not event(EventKind.STOPPED, "destroyed", by_us=True).is_external_stop


def test_poll_diff() -> None:
    run, off = DomainState.RUNNING, DomainState.SHUTOFF
    assert diff_states({}, {"a": run}) == [
        ("a", EventKind.DEFINED, "added"),
        ("a", EventKind.STARTED, "booted"),
    ]
    assert diff_states({"a": run}, {"a": off}) == [("a", EventKind.STOPPED, "shutdown")]
    assert diff_states({"a": run}, {"a": DomainState.CRASHED}) == [
        ("a", EventKind.CRASHED, "panicked")
    ]
    assert diff_states({"a": off}, {"a": run}) == [("a", EventKind.STARTED, "booted")]
    assert diff_states({"a": run}, {"a": DomainState.PAUSED}) == [
        ("a", EventKind.SUSPENDED, "paused")
    ]
    assert diff_states({"a": DomainState.PAUSED}, {"a": run}) == [
        ("a", EventKind.RESUMED, "unpaused")
    ]
    assert diff_states({"a": run}, {}) == [
        ("a", EventKind.STOPPED, "destroyed"),
        ("a", EventKind.UNDEFINED, "removed"),
    ]
    assert diff_states({"a": run}, {"a": run}) == []


async def test_hub_fans_out_and_closes() -> None:
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    hub.publish(event(EventKind.STARTED))
    assert (await first.get(1)).kind is EventKind.STARTED
    assert (await second.get(1)).kind is EventKind.STARTED
    second.close()
    hub.publish(event(EventKind.STOPPED))
    assert (await first.get(1)).kind is EventKind.STOPPED
    with pytest.raises(StopAsyncIteration):
        await second.get(1)
    with pytest.raises(asyncio.TimeoutError):
        await first.get(0.01)
    hub.close()
    assert [e async for e in first] == []
