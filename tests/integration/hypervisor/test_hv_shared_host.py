"""Two agents on one libvirtd: each driver, scoped to its agent, sees and touches its own.

Agents recover their leaves from ``list_managed()``, reap through it, and follow lifecycle
events; on a shared libvirtd (two ``sdmesh join`` on one machine, as the e2e pool test runs
them) an unscoped driver would hand one agent the other's domains to adopt and tear down.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from hv_support import meta, vm

from sdmesh.hypervisor import (
    DomainExists,
    EventKind,
    EventSubscription,
    InvalidSpec,
    LibvirtDriver,
    NotManaged,
)
from sdmesh.hypervisor.domain_xml import metadata_from_domain_xml
from sdmesh.hypervisor.reaper import reap

URI = "test:///default"  # one host state shared by every connection of the process


async def test_each_agent_lists_and_destroys_only_its_own_domains(default_host: Any) -> None:
    async with (
        LibvirtDriver(URI, owner="agent-a") as a,
        LibvirtDriver(URI, owner="agent-b") as b,
        LibvirtDriver(URI) as everyone,
    ):
        await a.define_and_start(vm("shared-a"), meta("pool", "sfConfig:a"))
        await b.define_and_start(vm("shared-b"), meta("pool", "sfConfig:b"))
        # The owner is written into the domain, so it survives agent restarts.
        xml = default_host.lookupByName("shared-a").XMLDesc(0)
        assert metadata_from_domain_xml(xml).node == "agent-a"  # type: ignore[union-attr]

        assert [d.name for d in await a.list_managed()] == ["shared-a"]
        assert [d.name for d in await b.list_managed("pool")] == ["shared-b"]
        assert [d.name for d in await everyone.list_managed()] == ["shared-a", "shared-b"]

        with pytest.raises(NotManaged, match="belongs to agent 'agent-b'"):
            await a.destroy("shared-b")
        assert default_host.lookupByName("shared-b").isActive()

        # The reaper (and a terminated pool's teardown) goes through the same listing.
        report = await reap(a, [], live_pools=(), terminated_pools={"pool"}, grace_s=0)
        assert report.destroyed == ["shared-a"] and report.failures == []
        assert [d.name for d in await everyone.list_managed()] == ["shared-b"]
        assert await b.destroy("shared-b") is True


async def test_a_driver_stamps_its_owner_and_refuses_another_agents_domain(
    default_host: Any,
) -> None:
    async with LibvirtDriver(URI, owner="agent-a") as a, LibvirtDriver(URI, owner="b") as b:
        started = await a.define_and_start(vm("stamped"), meta("p", "x"))
        assert started.metadata.node == "agent-a"
        with pytest.raises(InvalidSpec, match="for agent 'agent-b'"):
            await a.define_and_start(vm("misfiled"), replace(meta("p", "y"), node="agent-b"))
        # Names are per pool and path, not per agent: the second agent is told whose it is.
        with pytest.raises(DomainExists, match="agent 'agent-a'"):
            await b.check(vm("stamped"))
        assert [d.name for d in await a.list_managed()] == ["stamped"]
        await a.destroy("stamped")


async def next_event(events: EventSubscription, kind: EventKind) -> Any:
    while True:
        event = await events.get(timeout=5)
        if event.kind is kind:
            return event


async def test_events_of_another_agents_domains_are_not_reported(default_host: Any) -> None:
    async with (
        LibvirtDriver(URI, owner="agent-a") as a,
        LibvirtDriver(URI, owner="agent-b") as b,
        a.subscribe() as events,
    ):
        await b.define_and_start(vm("theirs"), meta("p", "theirs"))
        default_host.lookupByName("theirs").destroy()  # a stop outside sdmesh, on b's domain
        await b.destroy("theirs")
        await a.define_and_start(vm("ours"), meta("p", "ours"))
        first = await events.get(timeout=5)
        assert first.name == "ours"  # nothing about "theirs" came before
        started = await next_event(events, EventKind.STARTED)
        assert started.name == "ours" and started.metadata.node == "agent-a"
        await a.destroy("ours")


async def test_polled_events_are_scoped_too(default_host: Any) -> None:
    async with (
        LibvirtDriver(URI, owner="agent-a", events="poll", poll_interval_s=0.05) as a,
        LibvirtDriver(URI, owner="agent-b") as b,
        a.subscribe() as events,
    ):
        await b.define_and_start(vm("theirs"), meta("p", "theirs"))
        await a.define_and_start(vm("ours"), meta("p", "ours"))
        deadline = time.monotonic() + 5
        seen: set[str] = set()
        while "ours" not in seen and time.monotonic() < deadline:
            seen.add((await events.get(timeout=5)).name)
        assert seen == {"ours"}
        await a.destroy("ours")
        await b.destroy("theirs")
