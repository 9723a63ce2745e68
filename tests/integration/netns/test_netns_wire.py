"""Issue 12 on the wire, with real ``sdmesh join`` processes on namespace hosts: frames bound
to their recipient and channel, and limits before authentication.

Three agents (each with its own simulated hypervisor) and an attacker host without the key on
the same bridge. The attacker sniffs genuine gossip and DHT frames on their way to one member
and replays them to another member and to the other port: every one is dropped and counted
(``misdirected``), and nobody's view changes. Then it floods a member with idle TCP
connections and 16 MiB frame announcements on the gossip port and 1,100 half-sent HTTP
connections on its API (from inside the member: the API listens on loopback) while a pool
runs and another is submitted: both run, gossip keeps working and the API keeps answering.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.testing.agents import SdmeshAgent, wait_answering
from sdmesh.testing.api import bearer, make_token_file
from sdmesh.testing.netns import Frame, Host, Proc, Testbed, in_netns
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

pytestmark = [pytest.mark.root, pytest.mark.slow]

MESH_SIZE = 3
PORT = 7946
DHT_PORT = PORT + 1
API_PORT = 7948
TIMEOUT = 60.0
DESCRIPTORS = Path(__file__).resolve().parents[3] / "descriptors"


class Agents(SdmeshAgent):
    """``sdmesh join`` on each host with a simulated hypervisor of its own."""

    def __init__(self, testbed: Testbed) -> None:
        # Loopback TCP is no credential: the agents accept this admin token over TCP, which
        # is what these tests flood and call.
        token_file, self.token = make_token_file(testbed.workdir)
        super().__init__(
            testbed, port=PORT, api_port=API_PORT, extra_args=["--api-token-file", str(token_file)]
        )
        self.uris = {
            host.name: write_simulated_host(
                testbed.workdir / f"{host.name}-hypervisor.xml", cpus=4, memory_mib=4096
            )
            for host in testbed.hosts
        }

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        self.hypervisor = self.uris[host.name]
        return super().start(host, seeds, key=key)


@dataclass
class Mesh:
    testbed: Testbed
    kind: Agents
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def members(self) -> list[Host]:
        return self.testbed.hosts[:MESH_SIZE]

    @property
    def attacker(self) -> Host:
        return self.testbed.hosts[MESH_SIZE]

    def call(self, host: Host, method: str, path: str, body: object = None) -> tuple[int, Any]:
        sock = self.testbed.socket(host, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", API_PORT))
            conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=10)
            conn.sock = sock
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", **bearer(self.kind.token)}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            sock.close()
        return response.status, json.loads(raw) if raw else None

    def call_retrying(
        self, host: Host, method: str, path: str, body: object = None
    ) -> tuple[int, Any]:
        """``call``, again if the connection was reset: a client on the same address as a
        flood may lose its place to the flood's connections still arriving (they give way to
        it as soon as they have: it is never locked out)."""
        for _ in range(20):
            try:
                return self.call(host, method, path, body)
            except ConnectionResetError:
                time.sleep(0.25)
        return self.call(host, method, path, body)

    def get(self, host: Host, path: str) -> Any:
        status, body = self.call_retrying(host, "GET", path)
        assert status == 200, f"GET {path} on {host}: {status} {body}"
        return body

    def views(self) -> dict[str, dict[str, str]]:
        return {
            h.name: {p["name"]: p["state"] for p in self.get(h, "/v1/peers")} for h in self.members
        }

    def all_alive(self) -> bool:
        names = {h.name for h in self.members}
        try:
            return all(
                {n for n, s in view.items() if s == "alive"} == names
                for view in self.views().values()
            )
        except (OSError, AssertionError):
            return False

    @staticmethod
    def wait(condition: Callable[[], object], message: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, AssertionError):
                found = condition()
                if found:
                    return found
            time.sleep(0.3)
        raise AssertionError(message)


@pytest.fixture(scope="module")
def mesh(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    testbed = open_testbed(MESH_SIZE + 1, tmp_path_factory)
    kind = Agents(testbed)
    try:
        reason = kind.unavailable()
        if reason:
            pytest.skip(reason)
        mesh = Mesh(testbed, kind)
        first = mesh.members[0]
        mesh.procs[first.name] = kind.start(first, [])
        wait_answering(kind, [first], timeout=TIMEOUT)
        for host in mesh.members[1:]:
            mesh.procs[host.name] = kind.start(host, [first])
        mesh.wait(mesh.all_alive, "the three agents never all saw each other")
        yield mesh
    finally:
        kind.close()
        close_testbed(testbed)


def _sniff_while(mesh: Mesh, host: Host, port: int, action: Callable[[], None]) -> list[Frame]:
    """Frames arriving at ``host:port`` while ``action`` runs (and a little after)."""
    frames: list[Frame] = []
    sniffer = threading.Thread(
        target=lambda: frames.extend(mesh.testbed.sniff(host, udp_port=port, count=20, timeout=4.0))
    )
    sniffer.start()
    time.sleep(0.3)
    action()
    sniffer.join()
    return frames


def test_frames_replayed_to_another_member_or_port_are_dropped_and_counted(mesh: Mesh) -> None:
    tb = mesh.testbed
    a, b, c = mesh.members
    # Gossip on its way to c, and DHT traffic on its way to c (a write through a's API
    # stores the record on the k closest nodes, c among them).
    gossip = [f for f in tb.sniff(c, udp_port=PORT, count=10, timeout=3.0) if f.src[0] != b.address]
    assert gossip, "no gossip reached c in 3 s: nothing to replay"
    dht = _sniff_while(
        mesh, c, DHT_PORT, lambda: mesh.call(a, "PUT", "/v1/dht/wire-test?generation=1", None)
    )
    dht = [f for f in dht if f.src[0] != b.address]
    assert dht, "no DHT datagram reached c: nothing to replay"
    before_views = mesh.views()
    health = mesh.get(b, "/v1/health")
    misdirected = health["drops"].get("misdirected", 0)
    dht_misdirected = health["dht_drops"].get("misdirected", 0)
    for frame in gossip:  # to b, same ports, same source as the original
        tb.forge_udp(mesh.attacker, frame.src, b, PORT, frame.payload)
        tb.forge_udp(mesh.attacker, frame.src, b, DHT_PORT, frame.payload)  # the other port
    for frame in dht:
        tb.forge_udp(mesh.attacker, frame.src, b, DHT_PORT, frame.payload)
        tb.forge_udp(mesh.attacker, frame.src, b, PORT, frame.payload)
    expected = len(gossip) + len(dht)  # on each port: for another member, or another port

    def counted() -> bool:
        after = mesh.get(b, "/v1/health")
        return (
            after["drops"].get("misdirected", 0) - misdirected >= expected
            and after["dht_drops"].get("misdirected", 0) - dht_misdirected >= expected
        )

    mesh.wait(counted, f"replays not all counted: {mesh.get(b, '/v1/health')}", timeout=10)
    assert mesh.views() == before_views
    assert all(p.alive() for p in mesh.procs.values())


def _raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def _sockets(host: Host, count: int) -> list[socket.socket]:
    """``count`` TCP sockets inside ``host`` (one thread entering its namespace for all)."""
    return in_netns(host.netns, lambda: [socket.socket() for _ in range(count)])


def _open_fds(proc: Proc) -> int:
    return len(os.listdir(f"/proc/{proc.pid}/fd"))


def _vm(n: int) -> str:
    return f"""        sd{n} extends Compound {{
            sfSyncTerminate true;
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory 256; hostname "vm{n}"; storageBackend LAZY ATTRIB disk;
            }}
        }}"""


POOL = (
    '#include "org/smartfrog/components.sf"\n'
    '#include "ch/cern/openlab/smartdomains/components.sf"\n'
    "sfConfig extends Compound {\n    pool extends Compound {\n"
    + "\n".join(_vm(n) for n in range(2))
    + "\n    }\n}\n"
)


def test_connection_floods_leave_pools_gossip_and_clients_working(mesh: Mesh) -> None:
    tb = mesh.testbed
    a, b, _ = mesh.members
    status, body = mesh.call(a, "POST", "/v1/pools", {"descriptor": POOL, "name": "flood"})
    assert status == 201, body
    mesh.wait(lambda: mesh.get(a, "/v1/pools/flood")["state"] == "running", "the pool never ran")
    _raise_descriptor_limit(4096)
    victim = mesh.procs[b.name]
    rss_before = victim.rss_bytes()
    sockets: list[socket.socket] = []
    try:
        # 600 idle TCP connections to b's gossip port (64 used to make a pool fail)...
        for s in _sockets(mesh.attacker, 600):
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect((b.address, PORT))
            sockets.append(s)
        # ...8 of them announcing 16 MiB frames (read in full before authentication, once)...
        for _ in range(8):
            s = tb.socket(mesh.attacker, socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((b.address, PORT))
            with contextlib.suppress(OSError):
                s.sendall(struct.pack(">I", 16 << 20) + b"\0" * 65536)
            sockets.append(s)
        # ...and 1,100 half-sent HTTP connections to b's API, from b's own loopback.
        for s in _sockets(b, 1100):
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", API_PORT))
            with contextlib.suppress(OSError):
                s.send(b"GET /v1/hea")
            sockets.append(s)
        # A pool deployed during the flood: its orders and reports cross b's gossip port.
        status, body = mesh.call_retrying(
            b, "POST", "/v1/pools", {"descriptor": POOL, "name": "during"}
        )
        assert status == 201, body
        mesh.wait(
            lambda: mesh.get(a, "/v1/pools/during")["state"] == "running",
            "a pool submitted during the flood never ran",
            timeout=30,
        )
        deadline = time.monotonic() + 12  # longer than the API's and the stream's timeouts
        while time.monotonic() < deadline:
            assert mesh.get(b, "/v1/health")["status"] == "running"  # the API answers
            assert mesh.all_alive(), f"gossip suffered: {mesh.views()}"
            assert mesh.get(a, "/v1/pools/flood")["state"] == "running"
            assert _open_fds(victim) < 600, "the agent holds the flood's descriptors"
            time.sleep(0.5)
        assert victim.rss_bytes() - rss_before < 64 << 20, "frames were buffered unauthenticated"
    finally:
        for s in sockets:
            s.close()
    assert all(p.alive() for p in mesh.procs.values())
    for pool in ("flood", "during"):
        assert mesh.call(a, "DELETE", f"/v1/pools/{pool}")[0] == 202
