"""Real `sdmesh join` processes on loopback: join, failure detection, keys, leave, forgeries."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sdmesh.testing.api import bearer, free_port, make_token_file


class Mesh:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = root / "cluster.key"
        subprocess.run(
            [sys.executable, "-m", "sdmesh", "keygen", str(self.key)],
            check=True,
            capture_output=True,
        )
        # Loopback TCP is no credential: every agent accepts this admin token over TCP (its
        # api-token-file), and the CLI reaches each agent through its socket instead.
        self.token_file, self.token = make_token_file(root)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, tuple[int, int]] = {}
        #: Extra environment per agent (SDMESH_* settings), over the test session's.
        self.env: dict[str, dict[str, str]] = {}
        self.hypervisors: dict[str, str] = {}

    def start(
        self,
        name: str,
        seed: str | None = None,
        key: Path | None = None,
        ports: tuple[int, int] | None = None,
    ) -> None:
        """Start an agent; ports are picked free (unless given) but another process may take
        one before the agent binds it, so an agent that exits at once is started again on
        new ones."""
        for attempt in range(3):
            try:
                self._start_once(name, seed, key, ports if attempt == 0 else None)
                return
            except AssertionError:
                if attempt == 2 or self.procs[name].poll() is None:
                    raise

    def _start_once(
        self, name: str, seed: str | None, key: Path | None, ports: tuple[int, int] | None
    ) -> None:
        gossip, api = ports or (free_port(pair=True), free_port())
        self.ports[name] = (gossip, api)
        args = [
            sys.executable,
            "-m",
            "sdmesh",
            "join",
            "--name",
            name,
            "--bind",
            f"127.0.0.1:{gossip}",
            "--api",
            f"127.0.0.1:{api}",
            "--key-file",
            str(key or self.key),
            "--state-dir",
            str(self.root / name),
            "--api-token-file",
            str(self.token_file),
        ]
        if seed is not None:
            args += ["--peer", f"127.0.0.1:{self.ports[seed][0]}"]
        if name in self.hypervisors:
            args += ["--hypervisor", self.hypervisors[name]]
        log = (self.root / f"{name}.log").open("wb")
        # Per-agent settings (SDMESH_*). No fence guard runs here: say so, or no restartable
        # VM would start (a configured guard that does not answer refuses them).
        env = {"SDMESH_FENCE_GUARD_SOCKET": "", **os.environ, **self.env.get(name, {})}
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        proc = self.procs[name]
        try:
            # An agent that refused to start has exited: no use knocking for 30 s.
            self.wait(
                lambda: proc.poll() is not None or self.api(name, "/v1/health") is not None, 30, ""
            )
            assert proc.poll() is None
        except AssertionError:
            log_text = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
            rc = self.procs[name].poll()
            raise AssertionError(f"{name} never served its API (rc={rc}):\n{log_text}") from None

    def api(self, name: str, path: str) -> object:
        try:
            request = urllib.request.Request(self.url(name) + path, headers=self.headers())
            with urllib.request.urlopen(request, timeout=2) as r:
                return json.loads(r.read())
        except (OSError, http.client.HTTPException):
            return None

    def url(self, name: str) -> str:
        """The agent's TCP API (send ``headers()`` with every request)."""
        return f"http://127.0.0.1:{self.ports[name][1]}"

    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    def agent(self, name: str) -> str:
        """``--agent`` for the CLI: the agent's socket (the tests run as its user: admin)."""
        return f"unix:{self.root / name / 'api.sock'}"

    def view(self, name: str) -> dict[str, str]:
        members = self.api(name, "/v1/peers")
        return {m["name"]: m["state"] for m in members} if isinstance(members, list) else {}

    @staticmethod
    def wait(condition: object, timeout: float, message: str) -> float:
        assert callable(condition)
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if condition():
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(message)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_five_agents_join_through_one_and_agree(mesh: Mesh) -> None:
    mesh.start("a")
    for name in "bcde":
        mesh.start(name, seed="a")
    everyone = {name: "alive" for name in "abcde"}
    mesh.wait(lambda: all(mesh.view(n) == everyone for n in "abcde"), 15, "views never agreed")
    meta = mesh.api("c", "/v1/peers")[0]["meta"]  # type: ignore[index]
    assert meta["capacity"]["vcpus"] == 64 and meta["hypervisor"] == "test"


def test_kill_9_is_detected_and_leave_is_announced(mesh: Mesh) -> None:
    for name, seed in (("a", None), ("b", "a"), ("c", "a"), ("d", "a")):
        mesh.start(name, seed)
    mesh.wait(lambda: len(mesh.view("d")) == 4, 15, "no convergence")
    os.kill(mesh.procs["b"].pid, signal.SIGKILL)
    took = mesh.wait(
        lambda: all(mesh.view(n).get("b") == "dead" for n in "acd"), 20, "b never declared dead"
    )
    assert took < 15
    mesh.procs["c"].send_signal(signal.SIGINT)
    mesh.wait(lambda: mesh.view("a").get("c") == "left", 10, "leave not seen")
    assert mesh.procs["c"].wait(timeout=10) == 0


def test_a_node_with_the_wrong_key_stays_out(mesh: Mesh, tmp_path: Path) -> None:
    mesh.start("a")
    mesh.start("b", seed="a")
    other_key = tmp_path / "other.key"
    subprocess.run(
        [sys.executable, "-m", "sdmesh", "keygen", str(other_key)], check=True, capture_output=True
    )
    mesh.start("intruder", seed="a", key=other_key)
    time.sleep(4)
    assert "intruder" not in mesh.view("a") and "intruder" not in mesh.view("b")
    assert mesh.view("intruder") == {"intruder": "alive"}
    drops = mesh.api("a", "/v1/health")["drops"]  # type: ignore[index]
    assert drops.get("unknown_key", 0) + drops.get("auth_failed", 0) > 0


def test_forged_and_replayed_datagrams_change_nothing(mesh: Mesh) -> None:
    mesh.start("a")
    mesh.start("b", seed="a")
    mesh.wait(lambda: len(mesh.view("a")) == 2, 15, "no convergence")
    before = mesh.view("a")
    # Capture one genuine datagram b sends to a by standing in the middle: b's traffic to a
    # cannot be sniffed on loopback without privileges, so replay a's own frames to itself
    # and spray random bytes; both must be dropped and counted.
    target = ("127.0.0.1", mesh.ports["a"][0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for size in (0, 1, 17, 200, 1400):
            sock.sendto(os.urandom(size), target)
        sock.sendto(b"\x01" + os.urandom(60), target)
    time.sleep(1)
    assert mesh.view("a") == before
    drops = mesh.api("a", "/v1/health")["drops"]  # type: ignore[index]
    assert sum(drops.values()) >= 6


def test_the_dht_spans_the_agents(mesh: Mesh) -> None:
    mesh.start("a")
    for name in "bcd":
        mesh.start(name, seed="a")
    mesh.wait(
        lambda: all(mesh.api(n, "/v1/health")["dht_contacts"] >= 3 for n in "abcd"),  # type: ignore[index]
        15,
        "DHT routing tables never filled",
    )
    request = urllib.request.Request(
        mesh.url("b") + "/v1/dht/pool-42?generation=3",
        data=b"placement v1",
        method="PUT",
        headers=mesh.headers(),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["stored"] >= 3
    record = mesh.api("d", "/v1/dht/pool-42")
    assert record == {"value": "cGxhY2VtZW50IHYx", "generation": 3}


def test_an_agent_started_before_its_seed_joins_once_the_seed_is_up(mesh: Mesh) -> None:
    """Hosts boot in any order: an agent whose seed is down keeps retrying the join."""
    seed_ports = (free_port(pair=True), free_port())
    mesh.ports["seed"] = seed_ports
    mesh.start("early", "seed")
    time.sleep(2.5)  # at least one failed attempt and a retry
    mesh.start("seed", ports=seed_ports)
    mesh.wait(
        lambda: (
            mesh.view("early").get("seed") == "alive" and mesh.view("seed").get("early") == "alive"
        ),
        30,
        "the early agent never joined its late seed",
    )


def test_sighup_no_longer_kills_the_agent(mesh: Mesh) -> None:
    """systemctl reload sends SIGHUP (ExecReload=): the agent reloads its keys, trust store
    and tokens and carries on, still a member (it used to die without leaving the mesh)."""
    mesh.start("a")
    mesh.start("b", seed="a")
    mesh.wait(lambda: len(mesh.view("a")) == 2, 15, "no convergence")
    mesh.procs["b"].send_signal(signal.SIGHUP)
    time.sleep(2)
    assert mesh.procs["b"].poll() is None
    assert mesh.view("a") == {"a": "alive", "b": "alive"}
    assert "reloaded" in (mesh.root / "b.log").read_text(errors="replace")


def test_an_order_for_another_member_or_for_no_one_is_dropped_and_counted(mesh: Mesh) -> None:
    """Issue 12: an order sniffed on its way from a to c and replayed to b started a duplicate
    VM on b. A pool RPC addressed to c is now dropped at b (``misdirected``), and one
    addressed to no one too (``unaddressed``: only membership's push-pull may be)."""
    import asyncio

    from sdmesh.transport import StreamClient, StreamError, TransportSecurity

    mesh.start("a")
    mesh.start("b", seed="a")
    mesh.wait(lambda: len(mesh.view("a")) == 2, 15, "no convergence")
    security = TransportSecurity.from_key_file(mesh.key)
    b_address = ("127.0.0.1", mesh.ports["b"][0])
    order = {"rpc": "status", "pool": "nothing"}

    async def send(client: StreamClient) -> None:
        with contextlib.suppress(StreamError):
            await client.request(b_address, order, timeout=3)

    to_c = StreamClient(security, identity="a")
    to_c.peers.introduce(b_address, "c")
    asyncio.run(send(to_c))
    asyncio.run(send(StreamClient(security, identity="a")))
    to_b = StreamClient(security, identity="a")
    to_b.peers.introduce(b_address, "b")
    asyncio.run(to_b.request(b_address, order, timeout=3))  # addressed to b: answered
    drops = mesh.api("b", "/v1/health")["drops"]  # type: ignore[index]
    assert drops["misdirected"] == 1 and drops["unaddressed"] == 1, drops
