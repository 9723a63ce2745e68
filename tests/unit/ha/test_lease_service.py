"""The lease driver over real asyncio timers and the real clock, peers wired in-process:
renewal, the guard armed with each renewal, a cut host fencing before its reclaim ends."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdmesh.ha import guard_client
from sdmesh.ha import lease as ls
from sdmesh.ha.guard_client import GuardClient
from sdmesh.ha.guard_wire import boottime, encode_armed
from sdmesh.ha.lease_service import VOTER_FILE, LeaseService, Rpc, load_voter_state
from sdmesh.ha.lease_wire import LeaseWireError, decode, encode
from sdmesh.ha.timing import LeaseTiming
from sdmesh.membership import Member, State

FAST = LeaseTiming(isolation_timeout=1.2, renew_interval=0.2, stop_allowance=0.2, leave_term=5)
NAMES = frozenset({"a", "b", "c"})


def alive(names: frozenset[str] | set[str], state: State = State.ALIVE) -> list[Member]:
    return [Member(n, ("10.0.0.1", 7946), state=state) for n in sorted(names)]


def test_wire_round_trip_and_refusals() -> None:
    for message in (
        ls.LeaseRequest("a", 3, 6.0, ("t1",)),
        ls.LeaseGrant("b", "a", 3),
        ls.LeaseRevoked("b", "a", ("t1", "t2")),
        ls.ReclaimQuery("c", "a", "t1"),
        ls.ReclaimAnswer("b", "a", "t1", 2.5),
        ls.ReclaimAnswer("b", "a", "t1", None),
    ):
        assert decode(encode(message)) == message
    for bad in (
        None,
        {"rpc": "orders"},
        {"rpc": "lease", "m": []},
        {"rpc": "lease", "m": ["req", "a", -1, 6.0, []]},
        {"rpc": "lease", "m": ["req", "a", 1, float("inf"), []]},
        {"rpc": "lease", "m": ["req", "", 1, 6.0, []]},
        {"rpc": "lease", "m": ["grant", "b", "a"]},
        {"rpc": "lease", "m": ["revoked", "b", "a", ["t"] * 100]},
        {"rpc": "lease", "m": ["explode"]},
    ):
        with pytest.raises(LeaseWireError):
            decode(bad)


class Mesh:
    def __init__(self) -> None:
        self.services: dict[str, LeaseService] = {}
        self.cut: set[str] = set()
        self.isolated: dict[str, float] = {}

    def on_isolated(self, name: str) -> Callable[[str], None]:
        def isolated(reason: str) -> None:
            self.isolated.setdefault(name, boottime())

        return isolated

    def rpc_for(self, sender: str) -> Rpc:
        async def rpc(member: str, payload: dict[str, object]) -> object:
            if sender in self.cut or member in self.cut:
                raise ConnectionError("cut")
            await asyncio.sleep(0.001)
            return await self.services[member].handle_rpc(payload)

        return rpc


class FakeGuard:
    """A guard's socket in a thread: keeps what it is sent, and answers an arm from a bound
    address as the real guard does (``answer`` False: a guard that drops arms)."""

    def __init__(self, path: Path, answer: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            message = json.loads(data)
            self.received.append(message)
            if self.answer and sender and message["op"] == "arm":
                reply = encode_armed(message["fence_at"], len(message["fenceable"]))
                self.sock.sendto(reply, sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


async def test_renew_arm_cut_fence_then_reclaim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard_client, "CONFIRM_TIMEOUT", 2.0)  # a loaded machine's threads
    guard_path = tmp_path / "guard.sock"
    listener = FakeGuard(guard_path)
    mesh = Mesh()
    for name in sorted(NAMES):
        state = tmp_path / name
        state.mkdir()
        mesh.services[name] = LeaseService(
            name,
            mesh.rpc_for(name),
            state,
            timing=FAST,
            guard=GuardClient(guard_path) if name == "a" else None,
            fenceable=lambda: frozenset({("ha", "*")}),
            on_isolated=mesh.on_isolated(name),
        )
    try:
        for service in mesh.services.values():
            service.start(alive(NAMES), None)
        await asyncio.sleep(0.6)
        assert all(service.may_run() for service in mesh.services.values())
        arm = listener.received[0]
        assert arm["op"] == "arm" and arm["fenceable"] == [["ha", "*"]]
        assert arm["fence_at"] > boottime()
        heard = len(listener.received)
        assert await asyncio.to_thread(mesh.services["a"].rearm)  # the guard confirmed it
        assert len(listener.received) > heard and listener.received[-1]["op"] == "arm"
        mesh.isolated.clear()
        lapses = mesh.services["a"].lapses  # one already: no lease at start-up
        mesh.cut.add("a")
        started = boottime()
        await asyncio.wait_for(mesh.services["c"].reclaim("a"), 10)
        reclaimed = boottime()
        assert "a" in mesh.isolated and mesh.isolated["a"] < reclaimed
        assert mesh.services["a"].lapses == lapses + 1
        assert reclaimed - started >= FAST.rebuild_wait - FAST.renew_interval - 0.05
        assert not mesh.services["a"].may_run()
        saved = load_voter_state(tmp_path / "b")
        assert [h for h, _ in saved.revoked] == ["a"]
        assert (tmp_path / "b" / VOTER_FILE).stat().st_mode & 0o777 == 0o600
        # Healed: a learns of the revocation, acknowledges (it has fenced), renews again.
        mesh.cut.clear()
        await asyncio.sleep(1.0)
        assert mesh.services["a"].may_run()
        assert load_voter_state(tmp_path / "b").revoked == ()
    finally:
        for service in mesh.services.values():
            await service.close()
        listener.close()


async def test_a_planned_leave_arms_the_guard_for_the_away_grace_or_disarms(
    tmp_path: Path,
) -> None:
    guard_path = tmp_path / "guard.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(guard_path))
    listener.setblocking(False)
    mesh = Mesh()
    fenceable: dict[str, frozenset[tuple[str, str]]] = {"a": frozenset({("ha", "*")})}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        mesh.services[name] = LeaseService(
            name,
            mesh.rpc_for(name),
            tmp_path / name,
            timing=FAST,
            guard=GuardClient(guard_path) if name == "a" else None,
            fenceable=lambda name=name: fenceable.get(name, frozenset()),  # type: ignore[misc]
        )
    try:
        for service in mesh.services.values():
            service.start(alive({"a", "b"}), None)
        await asyncio.sleep(0.5)
        await mesh.services["a"].leave()
        arms = []
        while True:
            try:
                arms.append(json.loads(listener.recv(65536)))
            except BlockingIOError:
                break
        assert arms[-1]["op"] == "arm"
        assert arms[-1]["until"] >= boottime() + FAST.leave_term - FAST.isolation_timeout
        fenceable["a"] = frozenset()  # nothing fenceable: a planned stop disarms instead
        await mesh.services["a"].leave()
        assert json.loads(listener.recv(65536))["op"] == "disarm"
    finally:
        for service in mesh.services.values():
            await service.close()
        listener.close()


async def test_a_restart_remembers_its_voters_and_waits_for_them(tmp_path: Path) -> None:
    async def unreachable(member: str, payload: dict[str, object]) -> object:
        raise ConnectionError("cut")

    first = LeaseService("a", unreachable, tmp_path, timing=FAST)
    first.start(alive({"a"}), None)
    assert first.core.voters == {"a"} and not first.may_run()  # joining: no lease of one
    first.members_changed([*alive({"a", "b"}), *alive({"c"}, State.DEAD)])
    first.members_changed(alive({"a", "b"}))  # c reaped: it still votes
    assert first.core.voters == {"a", "b", "c"}
    assert (tmp_path / "lease-voters.json").stat().st_mode & 0o777 == 0o600
    await first.close()
    again = LeaseService("a", unreachable, tmp_path, timing=FAST)
    again.start(alive({"a"}), boottime() + 0.5)  # killed and restarted under the guard
    assert again.core.voters == {"a", "b", "c"} and again.covered_at_start()
    await asyncio.sleep(0.6)
    assert not again.may_run() and not again.covered_at_start()
    await again.close()


async def test_rearm_says_whether_the_guard_took_it(tmp_path: Path) -> None:
    async def unreachable(member: str, payload: dict[str, object]) -> object:
        raise ConnectionError("cut")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    missing = GuardClient(tmp_path / "no-guard.sock")
    guarded = LeaseService("a", unreachable, tmp_path / "a", timing=FAST, guard=missing)
    bare = LeaseService("b", unreachable, tmp_path / "b", timing=FAST)
    for service in (guarded, bare):
        service.start(alive({service.name}), None, peers_configured=False)  # a mesh of one
        assert service.may_run()
    assert not guarded.rearm()  # configured, unreachable: the VM must not start
    assert bare.rearm()  # no guard configured: nothing to arm
    for service in (guarded, bare):
        await service.close()
    missing.close()


def test_an_arm_the_guard_did_not_confirm_refuses_the_start(tmp_path: Path) -> None:
    """A datagram sent is not an arm taken: a guard that drops it (a wrong uid, a message it
    cannot decode) never answers, and the VM must not start (review finding)."""
    deaf = FakeGuard(tmp_path / "deaf.sock", answer=False)
    hearing = FakeGuard(tmp_path / "guard.sock")
    try:
        fenceable = frozenset({("ha", "*")})
        fence_at = boottime() + 5
        assert not GuardClient(deaf.sock.getsockname()).arm_confirmed(
            fence_at, fence_at + 1, fenceable, timeout=0.2
        )
        assert deaf.received and deaf.received[0]["op"] == "arm"  # sent, yet not taken
        deaf_client = GuardClient(deaf.sock.getsockname())
        assert not deaf_client.arm_confirmed(fence_at, fence_at + 1, fenceable, timeout=0.2)
        assert not deaf_client.arm_confirmed(fence_at, fence_at + 1, fenceable, timeout=0.2)
        started = time.monotonic()  # twice: then refused at once for a while, no wait
        assert not deaf_client.arm_confirmed(fence_at, fence_at + 1, fenceable, timeout=0.2)
        assert time.monotonic() - started < 0.1
        deaf_client.close()
        client = GuardClient(hearing.sock.getsockname())
        assert client.arm_confirmed(fence_at, fence_at + 1, fenceable)
        client.close()
    finally:
        deaf.close()
        hearing.close()


def test_the_test_driver_needs_no_fence_guard() -> None:
    """Its guests are the agent process's own: nothing outlives the agent to fence."""
    from sdmesh.agent.leases import simulated as _simulated

    assert _simulated("test") and _simulated("") and _simulated("test:///tmp/host.xml")
    assert not _simulated("qemu:///system") and not _simulated("xen:///system")


def test_a_restarting_agent_keeps_the_guard_armed_with_what_its_predecessor_armed() -> None:
    """Until the pool service has recovered this host's VMs, the guard's previous list stands:
    a first renewal re-arming it with nothing would leave the VMs unfenced if the agent died
    again (review finding)."""
    from sdmesh.agent.agent import Agent
    from sdmesh.agent.config import AgentConfig
    from sdmesh.transport import load_security

    agent = Agent(AgentConfig(name="a"), load_security(None, insecure=True))
    assert agent._fenceable() == frozenset()
    agent._inherit(frozenset({("web", "sfConfig:vm")}))
    assert agent._fenceable() == {("web", "sfConfig:vm")}


async def test_a_host_back_from_a_cut_starts_nothing_new_while_old_orders_may_arrive(
    tmp_path: Path,
) -> None:
    """After losing a lease it held, a host that holds one again takes on no new fenceable
    VM for ``order_flight``: an order sent before the cut, for a VM rebuilt elsewhere since,
    may still arrive (docs/ha.md). At start-up there is no such wait."""
    mesh = Mesh()
    for name in sorted(NAMES):
        (tmp_path / name).mkdir()
        mesh.services[name] = LeaseService(
            name, mesh.rpc_for(name), tmp_path / name, timing=FAST, order_flight=2.0
        )
    a = mesh.services["a"]
    try:
        for service in mesh.services.values():
            service.start(alive(NAMES), None)
        await asyncio.sleep(0.6)
        assert a.may_run() and a.may_start()  # a first lease: nothing was in flight
        mesh.cut.add("a")
        await asyncio.wait_for(mesh.services["c"].reclaim("a"), 10)
        mesh.cut.clear()
        async with asyncio.timeout(5):
            while not a.may_run():
                await asyncio.sleep(0.02)
        assert not a.may_start()
        await asyncio.sleep(2.1)
        assert a.may_run() and a.may_start()
    finally:
        for service in mesh.services.values():
            await service.close()
