"""Real agents as separate processes on namespace hosts: join, kill -9, cut and heal, loss, a
wrong key, forged and replayed datagrams.

Every test runs against each agent kind: ``sdmesh join``, and HashiCorp Serf, the baseline
that proved these tests before sdmesh existed (``SDMESH_NETNS_SERF=1``; off by default to keep
the suite short). One mesh of five agents per kind is shared by the module; each test starts
by restoring it (faults cleared, every agent running, every view complete) and checks the
properties, never exact timings.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sdmesh.testing.agents import (
    AgentKind,
    MemberState,
    SdmeshAgent,
    SerfAgent,
    View,
    all_alive,
    describe_views,
    reports_gone,
    start_mesh,
    wait_answering,
    wait_views,
)
from sdmesh.testing.netns import Host, Proc, Testbed
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

MESH_SIZE = 5
PORT = 7946
TIMEOUT = 30.0
pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
]  # generous: the figures are for bench/, tests only check what happens


@dataclass
class Mesh:
    testbed: Testbed
    kind: AgentKind
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def members(self) -> list[Host]:
        return self.testbed.hosts[:MESH_SIZE]

    @property
    def spare(self) -> Host:
        """A host on the same bridge that is not part of the mesh."""
        return self.testbed.hosts[MESH_SIZE]

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.members]

    def start(self, host: Host, *, key: bytes | None = None) -> Proc:
        self.procs[host.name] = self.kind.start(host, [self.members[0]], key=key)
        return self.procs[host.name]

    def wait_all_alive(self, observers: list[Host] | None = None) -> None:
        got = wait_views(
            self.kind, observers or self.members, all_alive(self.names), timeout=TIMEOUT
        )
        assert got.complete, f"not everyone alive for {got.missing}:\n{self.views()}"

    def restore(self) -> None:
        """Back to five running agents that all see each other alive, and no fault."""
        self.testbed.clear_faults()
        for host in self.members:
            proc = self.procs.get(host.name)
            if proc is None or not proc.alive():
                self.start(host)
        for proc in self.testbed.procs(self.spare):
            proc.kill()
        self.wait_all_alive()
        # ...and no view still holds the spare alive (a later test starts it afresh).
        got = wait_views(self.kind, self.members, reports_gone(self.spare.name), timeout=TIMEOUT)
        assert got.complete, f"the spare is still seen alive:\n{self.views()}"

    def views(self) -> str:
        return describe_views(self.kind, self.testbed.hosts)


def make_kind(name: str, testbed: Testbed) -> AgentKind:
    if name == "serf":
        # The local profile and fast reconnects keep the module short; bench/ uses LAN. A
        # plain -join exits when the one TCP dial to the seed is lost: retry under loss.
        return SerfAgent(
            testbed, profile="local", config={"reconnect_interval": "1s"}, retry_join=0.5
        )
    return SdmeshAgent(testbed)


@pytest.fixture(scope="module", params=["serf", "sdmesh"])
def mesh(
    request: pytest.FixtureRequest, netns_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    if request.param == "serf" and os.environ.get("SDMESH_NETNS_SERF") != "1":
        pytest.skip("the Serf baseline of these tests runs with SDMESH_NETNS_SERF=1 (~40 s)")
    testbed = open_testbed(MESH_SIZE + 1, tmp_path_factory)
    kind = make_kind(request.param, testbed)
    try:
        reason = kind.unavailable()
        if reason:
            pytest.skip(reason)
        m = Mesh(testbed, kind)
        for proc in start_mesh(kind, m.members):
            m.procs[proc.host.name] = proc
        yield m
    finally:
        kind.close()
        close_testbed(testbed)


@pytest.fixture
def healthy(mesh: Mesh) -> Mesh:
    mesh.restore()
    return mesh


def test_agents_join_through_one_peer(healthy: Mesh) -> None:
    for host in healthy.members:
        view = healthy.kind.members(host)
        assert sorted(view) == sorted(healthy.names), f"{host} sees {view}"


def test_kill_9_is_detected_and_replayed_datagrams_do_not_revive(healthy: Mesh) -> None:
    tb, victim = healthy.testbed, healthy.members[-1]
    others = healthy.members[:-1]
    sent = tb.sniff(victim, udp_port=PORT, count=10, timeout=1.5, direction="out")
    assert sent, "the victim sent no datagram in 1.5 s: nothing to replay"
    tb.kill(healthy.procs[victim.name])
    got = wait_views(healthy.kind, others, reports_gone(victim.name), timeout=TIMEOUT)
    assert got.complete, f"{got.missing} never noticed {victim} died:\n{healthy.views()}"
    for frame in sent:  # the dead node's own datagrams, byte for byte, from its own port
        tb.inject(victim, frame)
    _stays(healthy, others, reports_gone(victim.name), "a replay revived the dead node")
    healthy.start(victim)  # and it can come back
    healthy.wait_all_alive()


def test_cut_host_is_declared_dead_and_rejoins_when_healed(healthy: Mesh) -> None:
    tb, cut = healthy.testbed, healthy.members[2]
    others = [h for h in healthy.members if h != cut]
    tb.cut(cut)
    got = wait_views(healthy.kind, others, reports_gone(cut.name), timeout=TIMEOUT)
    assert got.complete, f"{got.missing} still think {cut} is there:\n{healthy.views()}"
    # What the cut host itself concludes is not checked: with Lifeguard it rightly blames
    # its own health first and slows its probes, so that can take long.
    assert healthy.procs[cut.name].alive()
    tb.heal(cut)
    healthy.wait_all_alive()


def test_mesh_works_under_packet_loss(healthy: Mesh, request: pytest.FixtureRequest) -> None:
    if healthy.kind.name == "serf":
        reason = "Serf can leave a joiner unknown to some member for over 30 s at 10 % loss"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))
    tb, newcomer = healthy.testbed, healthy.spare
    for host in [*healthy.members, newcomer]:
        tb.loss(host, 10)
    proc = healthy.kind.start(newcomer, [healthy.members[1]])
    everyone = [*healthy.members, newcomer]
    names = [h.name for h in everyone]
    got = wait_views(healthy.kind, everyone, all_alive(names), timeout=TIMEOUT)
    assert got.complete, f"join under 10 % loss incomplete:\n{healthy.views()}"
    time.sleep(3)  # gossip on under loss a while
    tb.clear_faults()
    # No claim about verdicts during the loss (Serf's local profile, on a busy 2-core
    # machine, does declare live members dead at 10 %); once it ends, everyone is back.
    got = wait_views(healthy.kind, everyone, all_alive(names), timeout=TIMEOUT)
    assert got.complete, f"not everyone alive once the loss ended:\n{healthy.views()}"
    tb.kill(proc)
    got = wait_views(healthy.kind, healthy.members, reports_gone(newcomer.name), timeout=TIMEOUT)
    assert got.complete, f"the newcomer's death went unnoticed:\n{healthy.views()}"


def test_node_with_a_wrong_key_does_not_get_in(healthy: Mesh) -> None:
    intruder = healthy.spare
    proc = healthy.kind.start(intruder, [healthy.members[0]], key=secrets.token_bytes(32))
    outside = _not_alive_in_any_view(intruder.name)
    _stays(healthy, healthy.members, outside, "the wrong-key node got in", seconds=2.0)
    if proc.alive():  # if it keeps running, it must see nobody either
        wait_answering(healthy.kind, [intruder])
        view = healthy.kind.members(intruder)
        assert not [n for n in healthy.names if view.get(n) == MemberState.ALIVE], view
    healthy.wait_all_alive()


def test_forged_and_replayed_datagrams_change_nothing(healthy: Mesh) -> None:
    tb, target = healthy.testbed, healthy.members[1]
    captured = tb.sniff(target, udp_port=PORT, count=10, timeout=1.5)
    assert captured, "no gossip reached the target in 1.5 s: nothing to replay"
    before = {h.name: healthy.kind.members(h) for h in healthy.members}
    by_address = {h.address: h for h in tb.hosts}
    member_address = (healthy.members[3].address, PORT)
    with tb.socket(healthy.spare) as attacker:
        for size in (0, 1, 16, 64, 512, 1400):
            for host in healthy.members:
                attacker.sendto(secrets.token_bytes(size), (host.address, PORT))
    for frame in captured:
        sender = by_address[frame.src[0]]
        tb.inject(sender, frame)  # replayed as is
        tb.inject(sender, frame)
        tb.forge_udp(healthy.spare, frame.src, target, PORT, _flip_a_bit(frame.payload))
        tb.forge_udp(healthy.spare, member_address, target, PORT, secrets.token_bytes(200))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # whatever an agent does with them, it does it soon
        after = {h.name: healthy.kind.members(h) for h in healthy.members}
        assert after == before, f"forged or replayed datagrams changed views:\n{healthy.views()}"
        time.sleep(0.1)
    assert all(p.alive() for p in healthy.procs.values())


# --- helpers ---------------------------------------------------------------------------------


def _stays(
    mesh: Mesh,
    observers: list[Host],
    predicate: Callable[[View], bool],
    message: str,
    *,
    seconds: float = 1.5,
) -> None:
    """Check ``predicate`` keeps holding for every observer's view for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for host in observers:
            view = mesh.kind.members(host)
            assert predicate(view), f"{message}: {host} sees {view}\n{mesh.views()}"
        time.sleep(0.1)


def _not_alive_in_any_view(name: str) -> Callable[[View], bool]:
    return lambda view: view.get(name) != MemberState.ALIVE


def _flip_a_bit(payload: bytes) -> bytes:
    if not payload:
        return b"\x01"
    i = secrets.randbelow(len(payload))
    return payload[:i] + bytes([payload[i] ^ 0x10]) + payload[i + 1 :]
