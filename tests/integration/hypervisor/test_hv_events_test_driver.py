"""Lifecycle events on the test driver: from libvirt callbacks, and polled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hv_support import meta, vm

from sdmesh.hypervisor import DomainEvent, EventKind, EventSubscription, LibvirtDriver


async def next_event(events: EventSubscription, kind: EventKind) -> DomainEvent:
    """The next event of ``kind`` (skipping others), or fail after 5 s."""
    while True:
        event = await events.get(timeout=5)
        if event.kind is kind:
            return event


async def test_own_operations_and_an_outside_destroy(default_host: Any) -> None:
    async with LibvirtDriver("test:///default") as driver:
        assert driver.event_source == "libvirt"  # the test driver has lifecycle events
        async with driver.subscribe() as events:
            await driver.define_and_start(vm("ev1"), meta("pool-e", "sfConfig:ev1"))
            defined = await events.get(timeout=5)
            started = await events.get(timeout=5)
            assert (defined.kind, started.kind) == (EventKind.DEFINED, EventKind.STARTED)
            assert defined.by_us and started.by_us and started.source == "libvirt"
            assert started.metadata.pool == "pool-e"

            default_host.lookupByName("ev1").destroy()  # someone else, behind our back
            stopped = await events.get(timeout=5)
            assert (stopped.kind, stopped.detail, stopped.by_us) == (
                EventKind.STOPPED,
                "destroyed",
                False,
            )
            assert stopped.is_external_stop and stopped.metadata.path == "sfConfig:ev1"

            await driver.destroy("ev1")  # inactive now: only the undefine remains, ours
            undefined = await next_event(events, EventKind.UNDEFINED)
            assert undefined.by_us


async def test_domains_that_are_not_ours_are_silent(default_host: Any) -> None:
    async with LibvirtDriver("test:///default") as driver, driver.subscribe() as events:
        xml = "<domain type='test'><name>foreign</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        default_host.defineXML(xml).create()
        default_host.lookupByName("foreign").destroy()
        await driver.define_and_start(vm("mine"), meta("p", "mine"))
        first = await events.get(timeout=5)
        assert first.name == "mine"  # nothing about "foreign" came before
        await driver.destroy("mine")


async def test_polling_finds_the_same_changes(default_host: Any) -> None:
    async with LibvirtDriver("test:///default", events="poll", poll_interval_s=0.05) as driver:
        assert driver.event_source == "poll"
        async with driver.subscribe() as events:
            await driver.define_and_start(vm("pl1"), meta("pool-p", "pl1"))
            started = await next_event(events, EventKind.STARTED)
            assert started.source == "poll" and started.by_us
            default_host.lookupByName("pl1").destroy()
            stopped = await next_event(events, EventKind.STOPPED)
            assert stopped.source == "poll" and not stopped.by_us
            dom = default_host.lookupByName("pl1")
            dom.undefine()
            undefined = await next_event(events, EventKind.UNDEFINED)
            assert not undefined.by_us and undefined.metadata.pool == "pool-p"


async def test_subscriptions_end_when_the_driver_closes(make_host: Any) -> None:
    driver = LibvirtDriver(make_host())
    await driver.open()
    events = driver.subscribe()
    await driver.close()
    with pytest.raises(StopAsyncIteration):
        await events.get(timeout=1)


def test_events_work_in_one_event_loop_after_another(default_host: Any) -> None:
    """libvirt's event loop is registered once per process; it must follow new loops."""

    async def one_round(name: str) -> str:
        async with LibvirtDriver("test:///default") as driver, driver.subscribe() as events:
            await driver.define_and_start(vm(name), meta("p", name))
            event = await events.get(timeout=5)
            await driver.destroy(name)
            return f"{driver.event_source}:{event.kind.value}"

    assert asyncio.run(one_round("loop1")) == "libvirt:defined"
    assert asyncio.run(one_round("loop2")) == "libvirt:defined"
