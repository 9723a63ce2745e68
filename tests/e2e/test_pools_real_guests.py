"""A pool of real guests across two `sdmesh join` agents sharing qemu:///system (issue #5).

Two agents on loopback (different ports, one cluster key), each with its own state directory
and its own label; the descriptor's labels put guests on both. The pool is submitted through
one agent and terminated through the other; the guests must really boot (their console says
so) and everything must go: domains, overlays, console logs. Both agents talk to the same
libvirtd, which is what makes this test sharp: each agent must keep to its own domains.

Timings (submit to running, to guests ready, terminate to gone) are printed: run with ``-s``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_guests import (
    GuestImage,
    console_identity,
    process_alive,
    remove_domain,
    virsh,
    wait_for_marker,
)

from sdmesh.hypervisor.domain_xml import metadata_from_domain_xml
from sdmesh.testing.api import free_port, socket_call

DESCRIPTOR = Path(__file__).parent / "pools" / "twoAgents.sf"
#: /var/lib/sdmesh, not pytest's tmp: QEMU (libvirt-qemu) cannot enter 0700 directories.
ROOT = Path("/var/lib/sdmesh/e2e")
POOL_PREFIX = "e2epool-"
LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")
#: VM path -> (agent letter, guest hostname, guest IP), as twoAgents.sf's labels place them.
VMS = {
    "sfConfig:pool:smartDomain1:domain": ("a", "machine7-dom1", "10.0.7.1"),
    "sfConfig:pool:smartDomain2:domain": ("b", "machine7-dom2", "10.0.7.2"),
    "sfConfig:pool:smartDomain3:domain": ("a", "machine7-dom3", "10.0.7.3"),
}
TIMEOUT = float(os.environ.get("SDMESH_BOOT_TIMEOUT", "180"))
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Agents get SIGTERM when pytest dies (killed CI, ^C twice): no orphan agents."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait(condition: Callable[[], object], timeout: float, message: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{message} (after {timeout:.0f}s)")
        time.sleep(0.2)
    return time.monotonic() - start


def pool_domains(pool: str) -> list[str]:
    """Every libvirt domain (running or not) of the pool: names carry the pool id."""
    return [d for d in virsh("list", "--all", "--name").stdout.split() if pool in d]


def reap_stale_runs() -> None:
    """Domains and directories of earlier test processes that died before their cleanup."""
    for name in virsh("list", "--all", "--name").stdout.split():
        m = re.match(rf"sdm-{POOL_PREFIX}(\d+)-", name)
        if m and not process_alive(int(m.group(1))):
            remove_domain(name)
    if ROOT.is_dir():
        for directory in ROOT.glob("pools-*"):
            m = re.match(r"pools-(\d+)-", directory.name)
            if m and not process_alive(int(m.group(1))):
                shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Agent:
    name: str
    label: str
    state: Path
    api: int
    gossip: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """``--agent``: the agent's control socket (the test runs as root: admin there)."""
        return f"unix:{self.state / 'api.sock'}"

    def get(self, path: str) -> object:
        try:
            status, body = socket_call(self.state / "api.sock", "GET", path)
        except OSError:
            return None
        return body if status == 200 else None

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (rc={self.process.poll()}) {self.log}\n{text[-3000:]}"


@dataclass
class TwoAgents:
    """Two agents on qemu:///system under one directory, and the pool the test submits."""

    root: Path
    image: GuestImage
    pool: str
    key: Path
    agents: dict[str, Agent] = field(default_factory=dict)

    def start(self, letter: str, seed: Agent | None) -> Agent:
        name = f"{self.pool}-{letter}"  # unique per run: domains record their agent's name
        gossip, api = free_port(pair=True), free_port()
        state = self.root / letter
        log = self.root / f"{letter}.log"
        argv = [
            sys.executable, "-m", "sdmesh", "join", "-v",
            "--name", name,
            "--bind", f"127.0.0.1:{gossip}",
            "--api", f"127.0.0.1:{api}",
            "--key-file", str(self.key),
            "--state-dir", str(state),
            "--hypervisor", "qemu:///system",
            "--label", f"sdmesh-e2e-{letter}",
        ]  # fmt: skip
        if seed is not None:
            argv += ["--peer", f"127.0.0.1:{seed.gossip}"]
        env = {**os.environ, "SDMESH_VIRT_TYPE": os.environ.get("SDMESH_VIRT_TYPE", "qemu")}
        env["SDMESH_ALLOWED_IMAGE_DIRS"] = ",".join(self.image.allowed_dirs)  # no default
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=out, env=env, preexec_fn=_die_with_parent
            )
        agent = Agent(name, f"sdmesh-e2e-{letter}", state, api, gossip, process, log)
        self.agents[letter] = agent
        with contextlib.suppress(AssertionError):  # not answering is reported just below
            wait(lambda: agent.get("/v1/health") is not None or process.poll() is not None, 60, "")
        if agent.get("/v1/health") is None:
            raise AssertionError(f"agent {name} never served its API\n{agent.tail()}")
        return agent

    def cli(self, letter: str, *args: str, timeout: float = TIMEOUT + 60) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sdmesh", *args, "--agent", self.agents[letter].url],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            logs = "\n".join(agent.tail() for agent in self.agents.values())
            raise AssertionError(
                f"sdmesh {' '.join(args)} via {letter}: rc={done.returncode}\n"
                f"{done.stdout}\n{done.stderr}\n{logs}"
            )
        return done.stdout

    def status(self, letter: str) -> dict[str, object]:
        return dict(json.loads(self.cli(letter, "status", self.pool, "--json", timeout=60)))

    def stop(self) -> None:
        for agent in self.agents.values():
            if agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            try:
                agent.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait(timeout=15)

    def leftovers(self) -> list[str]:
        """Domains of the pool, and volume or console files the agents left."""
        left = pool_domains(self.pool)
        for agent in self.agents.values():
            volumes = agent.state / "volumes"
            if volumes.is_dir():
                left += [str(p) for p in volumes.rglob("*") if p.is_file() and p.suffix != ".lock"]
        left += [str(p) for p in LIBVIRT_IMAGES.rglob(f"*{self.pool}*")]
        return left


def new_run() -> tuple[str, Path, Path]:
    """A run's id, its directory under ROOT (traversable by QEMU's user) and a fresh cluster
    key in it; stale runs of dead test processes are reaped first."""
    reap_stale_runs()
    run = f"{os.getpid()}-{secrets.token_hex(3)}"
    root = ROOT / f"pools-{run}"
    root.mkdir(parents=True)
    for directory in (root, *root.parents[:3]):
        directory.chmod(directory.stat().st_mode | 0o755)
    key = root / "cluster.key"
    subprocess.run(
        [sys.executable, "-m", "sdmesh", "keygen", str(key)], check=True, capture_output=True
    )
    return run, root, key


@pytest.fixture
def two_agents(guest_image: GuestImage) -> Iterator[TwoAgents]:
    """Two agents joined into one mesh; stopped, and their domains and files removed, after
    the test whatever happened."""
    run, root, key = new_run()
    mesh = TwoAgents(root, guest_image, f"{POOL_PREFIX}{run}", key)
    try:
        seed = mesh.start("a", None)
        mesh.start("b", seed)
        yield mesh
    finally:
        mesh.stop()
        for name in pool_domains(mesh.pool):
            remove_domain(name)
        shutil.rmtree(root, ignore_errors=True)


def announced(agent: Agent, names: set[str]) -> bool:
    """Every agent is alive in this agent's view and has told its capacity (placeable)."""
    peers = agent.get("/v1/peers")
    if not isinstance(peers, list):
        return False
    placeable = {
        p["name"]
        for p in peers
        if p["state"] == "alive" and (p.get("meta") or {}).get("capacity", {}).get("vcpus")
    }
    return names <= placeable


def lease_held(agent: Agent) -> bool:
    """Whether the agent may run restartable VMs yet (a host that just joined refuses them
    for a second or two, and a pool placed on it then fails)."""
    health = agent.get("/v1/health")
    lease = health.get("lease") if isinstance(health, dict) else None
    return isinstance(health, dict) and (lease is None or bool(lease.get("held")))


def test_a_pool_boots_on_two_agents_and_goes_when_the_other_terminates_it(
    two_agents: TwoAgents,
) -> None:
    mesh = two_agents
    a, b = mesh.agents["a"], mesh.agents["b"]
    names = {a.name, b.name}
    wait(lambda: announced(a, names) and announced(b, names), 60, "the agents never agreed")
    wait(lambda: lease_held(a) and lease_held(b), 60, "the agents never held their leases")
    defines = [
        "-D", f"guest.kernel={mesh.image.boot_kernel}",
        "-D", f"guest.initrd={mesh.image.initrd}",
        "-D", f"guest.base={mesh.image.base}",
    ]  # fmt: skip

    plan = json.loads(mesh.cli("a", "submit", str(DESCRIPTOR), "--dry-run", "--json", *defines))
    hosts = {item["path"]: item["host"] for item in plan["placement"]}
    assert {path: hosts.get(path) for path in VMS} == {
        path: mesh.agents[letter].name for path, (letter, _, _) in VMS.items()
    }, plan

    # Submit through a. --wait returns when the pool runs: with asynchCreateChild (as in the
    # tutorial) its Parallel runs as soon as it has launched its children, so the VMs may
    # still be starting; then every component must run.
    started = time.monotonic()
    mesh.cli("a", "submit", str(DESCRIPTOR), "--name", mesh.pool, "--wait", *defines)
    to_submitted = time.monotonic() - started
    wait(
        lambda: all(c["state"] == "running" for c in mesh.status("a")["components"]),  # type: ignore[attr-defined]
        TIMEOUT,
        f"not every component of {mesh.pool} runs",
    )
    to_running = time.monotonic() - started

    statuses = {letter: mesh.status(letter) for letter in "ab"}
    assert statuses["a"] == statuses["b"], "both agents report the same pool"
    status = statuses["a"]
    assert status["state"] == "running" and status["shepherd"] in names
    components = {str(c["path"]): c for c in status["components"]}  # type: ignore[attr-defined]

    # Each guest runs under its agent's libvirt domain and really boots (its console says so).
    domains: dict[str, list[str]] = {a.name: [], b.name: []}
    for path, (letter, hostname, ip) in VMS.items():
        agent = mesh.agents[letter]
        domain = str(components[path]["domain"])
        assert components[path]["host"] == agent.name
        assert virsh("domstate", domain).stdout.strip() == "running"
        metadata = metadata_from_domain_xml(virsh("dumpxml", domain).stdout)
        assert metadata is not None and (metadata.pool, metadata.path, metadata.node) == (
            mesh.pool,
            path,
            agent.name,
        )
        log = agent.state / "volumes" / "console" / mesh.pool / f"{domain}.log"
        wait_for_marker(log, timeout=max(1.0, TIMEOUT - (time.monotonic() - started)))
        text = log.read_text(errors="replace")
        identity = console_identity(text)
        assert (identity["hostname"], identity["ip"]) == (hostname, ip)
        assert "base=SDMESH-BASE-IMAGE-v1" in text, "the overlay reads its base image"
        domains[agent.name].append(domain)
    to_ready = time.monotonic() - started
    # One libvirtd, two agents: each sees only its own domains.
    for agent in (a, b):
        health = agent.get("/v1/health")
        assert isinstance(health, dict)
        assert health["domains"] == sorted(domains[agent.name]), health

    # Terminate through b, the agent the pool was not submitted to.
    started = time.monotonic()
    mesh.cli("b", "terminate", mesh.pool, "--wait")
    to_terminated = time.monotonic() - started
    with contextlib.suppress(AssertionError):  # what is left is reported just below
        wait(lambda: not mesh.leftovers(), 60, "")
    assert not mesh.leftovers(), "left after terminate"
    to_gone = time.monotonic() - started
    for letter in "ab":
        assert mesh.status(letter)["state"] == "terminated"
    for agent in (a, b):
        assert agent.process.poll() is None, f"agent died\n{agent.tail()}"

    print(
        f"\nTIMING two agents, {len(VMS)} guests: submit --wait {to_submitted:.1f}s, "
        f"submit->all running {to_running:.1f}s, "
        f"submit->guests ready {to_ready:.1f}s, terminate->terminated {to_terminated:.1f}s, "
        f"terminate->gone {to_gone:.1f}s"
    )
