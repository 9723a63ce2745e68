"""Regressions for shepherds under churn: a takeover honours the leave grace of hosts that
left (their VMs must not run twice), a momentary loss of the majority pauses a shepherd
instead of throwing it away, a leave hands everything over even if the view changes meanwhile,
and one unreachable successor does not use up the hand-over's time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdmesh.agent import pools as ap
from sdmesh.agent.pools import handover
from sdmesh.agent.pools.state import ShepherdRun
from sdmesh.membership import Member, State
from sdmesh.pools import shepherd as sc
from sdmesh.pools.ownership import Owners, QuorumGate, shepherd, successors
from sdmesh.pools.records import PoolRecord

from .cluster import Cluster
from .test_pool_cores import hosts, pool_text


def running_pool(count: int = 5) -> tuple[Cluster, str, sc.Shepherd]:
    cluster = Cluster(hosts(5))
    text = pool_text(count, restart="always")
    core = cluster.submit(text, "web", "h0")
    cluster.run(until=5)
    assert core.state == "running"
    return cluster, text, core


def on_host(cluster: Cluster, host: str) -> set[str]:
    return {path for path, where in cluster.running("web").items() if host in where}


def twice(cluster: Cluster) -> dict[str, list[str]]:
    return {path: where for path, where in cluster.running("web").items() if len(where) > 1}


# ------------------------------------------------------------ 1: the grace survives takeovers


def test_a_takeover_keeps_the_units_of_a_host_in_its_leave_grace() -> None:
    """The reviewer's flap: h1 left, then shepherd h0 takes the pool over again from the
    DHT record with nobody vouching (quorum flap, restart). h1's VMs must not be rebuilt."""
    cluster, text, _ = running_pool()
    left = on_host(cluster, "h1")
    assert left
    cluster.leave("h1")
    cluster.run(until=cluster.now + 10)
    assert on_host(cluster, "h1") == left
    assert set(cluster.dht["web"].away) == {"h1"}  # the grace is in the record
    new = cluster.take_over(text, cluster.dht["web"], "h0")  # as _take_over: no vouched
    cluster.run(until=cluster.now + 10)
    assert not twice(cluster)
    assert on_host(cluster, "h1") == left
    assert new.state == "running"
    # The grace is the one that started at the leave, not a fresh one.
    cluster.run(until=sc.AWAY_GRACE + 6)
    assert on_host(cluster, "h1") == left  # still running there (libvirt keeps it)
    assert all(h != "h1" for h in cluster.dht["web"].placement.values())
    assert cluster.dht["web"].away == {}


def test_a_new_shepherd_after_the_old_one_died_honours_the_grace() -> None:
    cluster, text, _ = running_pool()
    left = on_host(cluster, "h1")
    cluster.leave("h1")
    cluster.run(until=cluster.now + 10)
    cluster.kill("h0")
    new = cluster.take_over(text, cluster.dht["web"], "h2")
    cluster.run(until=cluster.now + 10)
    assert not twice(cluster)
    assert on_host(cluster, "h1") == left
    assert new.state == "running"


def test_a_leave_nobody_recorded_counts_as_vouched_for() -> None:
    """The shepherd died before it could record h1's leave: its successor learns of the
    leave from membership alone and still keeps h1's units (no record entry)."""
    cluster, text, _ = running_pool()
    left = on_host(cluster, "h1")
    record = cluster.dht["web"]
    cluster.kill("h0")
    cluster.hosts["h1"].left = True
    new = cluster.take_over(text, record, "h2")
    cluster.run(until=cluster.now + 10)
    assert not twice(cluster)
    assert on_host(cluster, "h1") == left
    assert new.state == "running"


def test_records_carry_the_grace_and_older_records_decode() -> None:
    record = PoolRecord(
        "web", "d", 3, "h0", "running", {"u": "h1"}, "", {"h1": 1e9}, {"h1": {"u": "running"}}
    )
    assert PoolRecord.decode(record.encode()) == record
    plain = PoolRecord("web", "d", 3, "h0")
    assert PoolRecord.decode(plain.encode()) == plain


# --------------------------------------------------------- 2: pause, not drop, on a flap


def test_a_paused_core_decides_nothing_and_resumes_at_the_same_generation() -> None:
    cluster, _, core = running_pool()
    generation = core.generation
    assert core.handle(sc.Pause(), cluster.now) == []
    cluster.kill("h2")  # a death seen while paused: nothing may move yet
    cluster.run(until=cluster.now + 5)
    assert core.generation == generation
    assert "h2" in cluster.dht["web"].placement.values()
    actions = core.handle(sc.Resume(), cluster.now)
    for action in actions:
        cluster.shepherd_action("web", "h0", action)
    cluster.run(until=cluster.now + 5)
    assert "h2" not in cluster.dht["web"].placement.values()  # moved only now
    assert core.generation > generation  # by the move itself, not by a takeover
    assert core.state == "running" and not twice(cluster)


def test_orders_dropped_during_a_pause_are_resent_on_resume() -> None:
    cluster = Cluster(hosts(3))
    core = cluster.submit(pool_text(3), "web", "h0")
    core.handle(sc.Pause(), cluster.now)
    cluster.queue.clear()  # the orders queued before the pause never went out
    cluster.run(until=5)
    assert cluster.running("web") == {}
    for action in core.handle(sc.Resume(), cluster.now):
        cluster.shepherd_action("web", "h0", action)
    cluster.run(until=cluster.now + 5)
    assert core.state == "running" and len(cluster.running("web")) == 3
    assert core.generation == 1


def test_the_quorum_gate_holds_for_a_moment_and_pauses_at_once_on_a_death() -> None:
    gate = QuorumGate(hold=1.5)
    assert gate.observe(True, [], 0.0)
    assert gate.observe(False, [], 1.0)  # lost: not yet
    assert gate.recheck_at() == 2.5
    assert gate.observe(True, [], 2.0)  # refuted in time: nothing happened
    assert gate.observe(False, [], 3.0)
    assert not gate.observe(False, [], 4.5)  # lost for the whole hold
    assert gate.recheck_at() is None
    assert gate.observe(True, [], 5.0)
    assert not gate.observe(False, ["h3"], 6.0)  # a death verdict without a majority: now
    assert gate.observe(True, ["h3"], 7.0)
    assert gate.observe(False, ["h3"], 8.0)  # an old death is no news


# -------------------------------------------------------------------- the driver, faked


class FakeMembership:
    def __init__(self, names: list[str]) -> None:
        meta = {"capacity": {"vcpus": 4, "memory_mib": 4096}}
        self.m = {n: Member(n, ("127.0.0.1", 1), meta=meta) for n in names}

    def set(self, name: str, state: State) -> None:
        self.m[name] = Member(name, ("127.0.0.1", 1), state=state, meta=self.m[name].meta)

    def members(self) -> list[Member]:
        return list(self.m.values())

    def live_members(self) -> list[Member]:
        return [m for m in self.m.values() if m.state.live]

    def state_of(self, name: str) -> State | None:
        return self.m[name].state if name in self.m else None

    def member(self, name: str) -> Member | None:
        return self.m.get(name)

    def rumors(self) -> list[Any]:
        return []


class StubCore:
    """Stands in for a shepherd core: records what the driver feeds it."""

    def __init__(self, generation: int = 4) -> None:
        self.events: list[sc.Event] = []
        self.paused = False
        self.ended = False
        self.generation = generation

    def handle(self, event: sc.Event, now: float) -> list[sc.Action]:
        self.events.append(event)
        if isinstance(event, sc.Pause):
            self.paused = True
        elif isinstance(event, sc.Resume):
            self.paused = False
        return []

    def superseded_by(self, stored: PoolRecord) -> bool:
        return stored.generation > self.generation


def service(names: list[str], me: str, tmp: Path) -> tuple[ap.PoolService, FakeMembership]:
    membership = FakeMembership(names)
    node = SimpleNamespace(
        core=membership, listeners=[], rumor_listeners=[], publish=lambda *a: None
    )
    caps = SimpleNamespace(cpus=4, memory_mib=4096)
    svc = ap.PoolService(me, node, None, None, None, caps, tmp)  # type: ignore[arg-type]
    return svc, membership


def shepherded(svc: ap.PoolService, names: list[str]) -> tuple[str, Any]:
    pool = next(f"p{i}" for i in range(200) if shepherd(f"p{i}", names) == svc.name)
    core = StubCore()
    svc.shepherding[pool] = ShepherdRun(core)  # type: ignore[arg-type]
    svc.known[pool] = ap.KnownPool("d", "running", svc.name, time.monotonic())
    return pool, core


def holds(svc: ap.PoolService, pool: str, core: object) -> bool:
    """The pool is still shepherded here, by that very core."""
    run = svc.shepherding.get(pool)
    return run is not None and run.core is core


def test_a_view_change_during_a_leave_keeps_the_pools_for_the_hand_over(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        names = [f"h{i}" for i in range(5)]
        svc, membership = service(names, "h0", tmp_path)
        pool, core = shepherded(svc, names)
        svc.leaving = True  # leave() sets it, then drains for up to LEAVE_DRAIN
        membership.set("h3", State.SUSPECT)  # any view event meanwhile
        svc._apply_view()
        assert holds(svc, pool, core)
        assert core.events == []

    asyncio.run(scenario())


def test_a_quorum_flap_pauses_and_resumes_the_same_core(tmp_path: Path) -> None:
    async def scenario() -> None:
        names = ["h0", "h1", "h2"]
        svc, membership = service(names, "h0", tmp_path)
        pool, core = shepherded(svc, names)
        spawned: list[str] = []
        take_over = svc._take_over

        async def record_take_over(p: str) -> None:
            spawned.append(p)
            await take_over(p)

        svc._take_over = record_take_over  # type: ignore[method-assign,assignment]

        async def stored(p: str, *, newest: bool = False) -> PoolRecord:
            return PoolRecord(p, "d", core.generation, "h0", "running")

        svc.read_record = stored  # type: ignore[method-assign,assignment]
        membership.set("h1", State.SUSPECT)
        membership.set("h2", State.SUSPECT)
        svc._apply_view()  # lost, within the hold: nothing happens
        assert holds(svc, pool, core) and not core.paused
        membership.set("h1", State.ALIVE)  # refuted at once
        svc._apply_view()
        assert not core.paused and spawned == []
        membership.set("h1", State.SUSPECT)
        svc._apply_view()
        await asyncio.sleep(QuorumGate().hold + 0.2)  # the hold runs out: a recheck
        assert holds(svc, pool, core) and svc.shepherding[pool].core.paused
        membership.set("h1", State.ALIVE)
        membership.set("h2", State.ALIVE)
        svc._apply_view()
        await asyncio.sleep(0.05)
        assert holds(svc, pool, core) and not core.paused
        assert isinstance(core.events[-1], sc.Resume)
        assert spawned == []  # no takeover, so no generation bump
        assert core.generation == 4

    asyncio.run(scenario())


def test_a_core_superseded_while_paused_is_taken_over_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        names = ["h0", "h1", "h2"]
        svc, membership = service(names, "h0", tmp_path)
        pool, core = shepherded(svc, names)
        spawned: list[str] = []

        async def record_take_over(p: str) -> None:
            spawned.append(p)

        async def stored(p: str, *, newest: bool = False) -> PoolRecord:
            return PoolRecord(p, "d", core.generation + 1, "h1", "running")

        svc._take_over = record_take_over  # type: ignore[method-assign,assignment]
        svc.read_record = stored  # type: ignore[method-assign,assignment]
        membership.set("h1", State.SUSPECT)
        membership.set("h2", State.DEAD)  # a death without a majority: paused at once
        svc._apply_view()
        assert core.paused
        membership.set("h1", State.ALIVE)
        membership.set("h2", State.ALIVE)
        svc._apply_view()
        await asyncio.sleep(0.05)
        assert pool not in svc.shepherding and spawned == [pool]

    asyncio.run(scenario())


def test_a_dead_successor_does_not_use_up_the_hand_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "HANDOVER_TIMEOUT", 1.5)
    monkeypatch.setattr(handover, "HANDOVER_ATTEMPT", 0.5)

    async def scenario() -> None:
        names = [f"h{i}" for i in range(5)]
        svc, _ = service(names, "h0", tmp_path)
        pool, core = shepherded(svc, names)
        first, second = successors(pool, names, "h0")[:2]
        asked: list[str] = []

        class Client:
            async def request(self, addr: Any, request: Any, timeout: float) -> object:
                asked.append(str(request["pools"]))
                if len(asked) == 1:  # the closest successor never answers
                    await asyncio.sleep(timeout)
                    raise TimeoutError
                return {"taken": {pool: 9}}

        svc.client = Client()  # type: ignore[assignment]

        async def spec(digest: str, pool_: str | None = None) -> Any:
            return SimpleNamespace(pool=pool_, encode=lambda: b"spec")

        async def write(records: Any) -> None:
            return None

        svc.spec = spec  # type: ignore[method-assign,assignment]
        svc._write_records = write  # type: ignore[method-assign]
        core.handle = lambda event, now: [
            sc.SaveRecord(PoolRecord(pool, "d", 4, "h0")),
            sc.HandOff(first, PoolRecord(pool, "d", 4, "h0")),
        ]
        svc.leaving = True
        began = asyncio.get_running_loop().time()
        outcome = await svc._hand_over_all()
        assert outcome == {pool: second}
        assert asyncio.get_running_loop().time() - began < 1.2

    asyncio.run(scenario())


def test_suspected_successors_are_asked_last() -> None:
    members = [f"h{i}" for i in range(5)]
    order = successors("web", members, "h0")
    assert successors("web", members, "h0", [order[0]]) == [*order[1:], order[0]]


def test_owners_agree_with_shepherd() -> None:
    members = [f"h{i}" for i in range(9)]
    owners = Owners(members)
    for i in range(50):
        assert owners.shepherd(f"p{i}") == shepherd(f"p{i}", members)
    assert Owners(()).shepherd("p") is None
