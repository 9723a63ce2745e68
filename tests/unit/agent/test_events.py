"""EventHub: fan-out, bounded queues with overflow markers, recent history, closing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import msgpack
import pytest

from sdmesh.agent.events import EventHub, follow_members, follow_pools, member_event
from sdmesh.agent.pools import TOPIC_POOL, LeafOp
from sdmesh.membership import Member, MemberEvent
from sdmesh.membership.actions import MemberEventKind
from sdmesh.membership.member import State


def ticking() -> Any:
    now = [1000.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    return clock


async def drain(subscription: Any) -> list[dict[str, Any]]:
    out = []
    while (event := await subscription.next(0)) is not None:
        out.append(event)
    return out


async def test_every_follower_gets_every_event_in_order_with_a_time() -> None:
    hub = EventHub(clock=ticking())
    first, second = hub.subscribe(), hub.subscribe()
    for i in range(3):
        hub.publish({"type": "pool", "n": i})
    for subscription in (first, second):
        got = await drain(subscription)
        assert [e["n"] for e in got] == [0, 1, 2]
        assert [e["time"] for e in got] == [1001.0, 1002.0, 1003.0]
    assert hub.subscribers == 2 and hub.published == 3


async def test_a_slow_follower_loses_the_oldest_and_is_told_how_many() -> None:
    hub = EventHub(queue=3)
    slow, fast = hub.subscribe(), hub.subscribe(limit=100)
    for i in range(10):
        hub.publish({"type": "pool", "n": i})  # never blocks, whoever is behind
    got = await drain(slow)
    assert got[0] == {"type": "overflow", "dropped": 7}
    assert [e["n"] for e in got[1:]] == [7, 8, 9]
    assert len(await drain(fast)) == 10
    assert hub.dropped == 7
    hub.publish({"type": "pool", "n": 10})
    assert [e.get("n") for e in await drain(slow)] == [10]  # no marker once caught up


async def test_a_new_follower_asks_for_recent_events() -> None:
    hub = EventHub(recent=4, clock=ticking())
    for i in range(6):
        hub.publish({"type": "pool", "n": i})
    assert await drain(hub.subscribe()) == []  # no history unless asked
    assert [e["n"] for e in await drain(hub.subscribe(backlog=2))] == [4, 5]
    assert [e["n"] for e in await drain(hub.subscribe(backlog=50))] == [2, 3, 4, 5]
    assert [e["n"] for e in await drain(hub.subscribe(since=1004.0))] == [4, 5]
    assert [e["n"] for e in await drain(hub.subscribe(after=4))] == [4, 5]  # ids count from 1
    assert await drain(hub.subscribe(backlog=0)) == []
    follower = hub.subscribe(backlog=1)
    hub.publish({"type": "pool", "n": 6})
    assert [e["n"] for e in await drain(follower)] == [5, 6]


async def test_next_times_out_for_heartbeats_and_wakes_on_publish() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    assert await subscription.next(0.01) is None
    waiting = asyncio.ensure_future(subscription.next(5))
    await asyncio.sleep(0)
    hub.publish({"type": "member", "name": "a"})
    assert await asyncio.wait_for(waiting, 1) == {"type": "member", "name": "a", "time": ANY}


async def test_closing_ends_iteration_after_what_is_queued() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    hub.publish({"type": "pool", "n": 1})
    reader = asyncio.ensure_future(_collect(subscription))
    await asyncio.sleep(0)
    hub.close()
    assert [e["n"] for e in await asyncio.wait_for(reader, 1)] == [1]
    assert hub.subscribers == 0
    assert await _collect(hub.subscribe()) == []  # a closed hub ends new followers at once
    hub.publish({"type": "pool"})  # still harmless


async def _collect(subscription: Any) -> list[dict[str, Any]]:
    return [event async for event in subscription]


def test_a_subscription_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError):
        EventHub().subscribe(limit=0)


# ------------------------------------------------------------------------------ feeding
def change(old: State | None, new: State) -> MemberEvent:
    return MemberEvent(MemberEventKind.JOINED, Member("b", ("10.0.0.2", 7946)), old, new)


async def test_member_changes_become_events_metadata_updates_do_not() -> None:
    hub = EventHub()
    node = SimpleNamespace(listeners=[])
    follow_members(hub, node)  # type: ignore[arg-type]
    subscription = hub.subscribe()
    for listener in node.listeners:
        listener(change(None, State.ALIVE))
        listener(change(State.ALIVE, State.ALIVE))
        listener(change(State.ALIVE, State.SUSPECT))
    got = await drain(subscription)
    assert [(e["previous"], e["state"]) for e in got] == [(None, "alive"), ("alive", "suspect")]
    assert (
        {k: v for k, v in got[0].items() if k != "time"}
        == member_event(change(None, State.ALIVE))
        == {
            "type": "member",
            "name": "b",
            "address": "10.0.0.2:7946",
            "state": "alive",
            "previous": None,
        }
    )


def rumor(pool: str, **body: object) -> Any:
    return SimpleNamespace(topic=TOPIC_POOL, key=pool, payload=msgpack.packb(body))


class FakePools:
    def __init__(self, rumors: list[Any]) -> None:
        self.name = "me"
        self.shepherding: dict[str, object] = {}
        self.tombs: dict[str, object] = {}
        self.listeners: list[Any] = []
        self.leaf_listeners: list[Any] = []
        self.node = SimpleNamespace(core=SimpleNamespace(rumors=lambda: rumors), rumor_listeners=[])


async def test_pool_events_once_per_change_from_rumors_and_the_shepherd() -> None:
    hub = EventHub()
    pools = FakePools([rumor("old", state="running", shepherd="x")])
    follow_pools(hub, pools)  # type: ignore[arg-type]
    subscription = hub.subscribe()
    (from_rumor,) = pools.node.rumor_listeners
    (from_shepherd,) = pools.listeners
    from_rumor(rumor("old", state="running", shepherd="x"))  # known before: not a change
    from_rumor(rumor("p", state="deploying", shepherd="x", generation=3))
    from_rumor(rumor("p", state="deploying", shepherd="x", generation=3))
    from_rumor(rumor("p", state="running", shepherd="x"))
    # A termination record the pool service refused (unsigned, forged) says nothing.
    from_rumor(SimpleNamespace(topic="tomb", key="p", payload=msgpack.packb({"by": "y"})))
    # One it applied goes ahead of the shepherd's "terminating".
    pools.tombs["p"] = object()
    from_rumor(SimpleNamespace(topic="tomb", key="p", payload=msgpack.packb({"by": "y"})))
    from_rumor(rumor("p", state="terminating", shepherd="x", generation=3))
    from_rumor(SimpleNamespace(topic="tomb", key="unknown", payload=b""))
    # Our own pool: the shepherd's report (with the reason) counts, not our rumor.
    pools.shepherding["q"] = object()
    from_rumor(rumor("q", state="failed", shepherd="me", generation=2))
    from_shepherd({"pool": "q", "state": "failed", "reason": "disk full", "generation": 2})
    from_shepherd({"pool": "q", "state": "failed", "reason": "disk full", "generation": 2})
    got = [
        (e["pool"], e["state"], e["shepherd"], e["generation"], e["reason"])
        for e in await drain(subscription)
    ]
    assert got == [
        ("p", "deploying", "x", 3, ""),
        ("p", "running", "x", None, ""),
        ("p", "terminating", "x", None, "terminated on request"),
        ("q", "failed", "me", 2, "disk full"),
    ]
    assert all(event["type"] == "pool" for _, event in hub.recent())


async def test_component_events_from_the_shepherd_and_from_this_hosts_leaves() -> None:
    hub = EventHub()
    pools = FakePools([])
    follow_pools(hub, pools)  # type: ignore[arg-type]
    subscription = hub.subscribe()
    shepherd_event = {
        "pool": "p",
        "path": "sfConfig:vm",
        "kind": "KvmDomain",
        "state": "running",
        "host": "h1",
        "domain": "sdm-p-vm",
    }
    pools.listeners[0](shepherd_event)
    leaf = LeafOp("p", "sfConfig:vm", "start", "running", "KvmDomain", "x", "sdm-p-vm", 0.1)
    pools.leaf_listeners[0](leaf)
    pools.shepherding["p"] = object()
    pools.leaf_listeners[0](leaf)  # the shepherd reports its own pools' components itself
    got = [{k: v for k, v in e.items() if k != "time"} for e in await drain(subscription)]
    assert got == [
        {"type": "component", **shepherd_event},
        {"type": "component", **shepherd_event, "host": "me"},
    ]
