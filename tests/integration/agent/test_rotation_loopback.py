"""Rotating the cluster key across a running 5-agent mesh while a pool deploys (issue 12).

Five real agents on loopback, host identities on, each with its own key file. A signed pool
is submitted and held in ``deploying`` by its descriptor: scripts beside the shepherd pace
the sequential start of its VMs, and the last one waits for a gate file the test opens only
once the rotation is done, so orders and reports cross the mesh while the key changes under
them. ``sdmesh keygen --add``, ``--use`` and ``--remove`` go through three different agents.
Then: the pool runs with every VM exactly once, nobody was declared dead or left, a datagram
and a stream request sealed with the removed key are dropped (``unknown_key``) and answered
by no one, though the same requests were answered before (a DHT datagram is dropped too);
and a revoked host is out of every other agent's view within one failure-detection period.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.membership.config import MembershipConfig, suspicion_bounds
from sdmesh.membership.messages import Ping
from sdmesh.transport import StreamClient, StreamError, TransportSecurity
from sdmesh.transport.keyring import Keyring
from sdmesh.transport.seal import Channel, Dropped, SealedCodec, identity_tag

from .test_identity_loopback import IdentityMesh
from .test_pools_loopback import PoolMesh

NAMES = [f"n{i}" for i in range(5)]
VMS = 5
MAX_FRAME = 1400


class RotationMesh(IdentityMesh, PoolMesh):
    """Identities (enrol, ``sdmesh ca``) and test-driver hosts (pools), one key file each."""

    def start_member(self, name: str, seed: str | None) -> None:
        self.enrol(name)
        own_key = self.root / f"{name}.key"
        own_key.write_bytes(self.key.read_bytes())
        own_key.chmod(0o600)
        self.env[name] = {"SDMESH_ALLOW_SHELL": "true"}  # the pacing scripts
        host = self.root / f"{name}-host.xml"
        write_simulated_host(host, cpus=8, memory_mib=8192)
        self.hypervisors[name] = f"test://{host}"
        self.start(name, seed, key=own_key)

    def ring(self, name: str) -> object:
        return self.api(name, "/v1/keyring")

    def dht_unknown_key(self, name: str) -> int:
        health = self.api(name, "/v1/health")
        assert isinstance(health, dict)
        return int(health["dht_drops"]["unknown_key"])

    def keygen(self, via: str, *args: str) -> str:
        done = self.sdmesh("keygen", *args, "--agent", self.agent(via))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def rmesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RotationMesh]:
    # Identities on; the session's trusted operator (tests/conftest.py) signs submissions.
    mesh = RotationMesh(tmp_path)
    monkeypatch.setenv("SDMESH_IDENTITY_CA", str(mesh.ca_dir / "ca.pub"))
    try:
        yield mesh
    finally:
        mesh.stop()


def paced_pool(root: Path, gate: Path) -> Path:
    """VMs started one after the other (a Compound), a one-second script between them, and
    before the last one a script that waits for ``gate`` (60 s at most, then fails)."""
    parts = []
    for i in range(VMS):
        parts.append(
            f"    sd{i} extends Compound {{\n"
            f'        disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}\n'
            f"        vm extends KvmDomain {{ memory 128; storageBackend LAZY ATTRIB disk; }}\n"
            f"    }}"
        )
        if i < VMS - 2:
            parts.append(
                f'    pause{i} extends Script {{ shell LAZY ATTRIB sh; startScript "sleep 1"; }}'
            )
        elif i == VMS - 2:
            wait = f"for i in $(seq 600); do [ -e {gate} ] && exit 0; sleep 0.1; done; exit 1"
            parts.append(
                f'    gate extends Script {{ shell LAZY ATTRIB sh; startScript "{wait}"; }}'
            )
    path = root / "paced.sf"
    path.write_text(
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        '#include "org/smartfrog/services/shellscript/components.sf"\n'
        "sfConfig extends Compound {\n    sh extends BashShell;\n" + "\n".join(parts) + "\n}\n"
    )
    return path


class ViewWatch:
    """Polls every agent's view in the background; remembers every state other than alive."""

    def __init__(self, mesh: RotationMesh) -> None:
        self.mesh = mesh
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ViewWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for viewer in NAMES:
                for member, state in self.mesh.view(viewer).items():
                    if state != "alive":
                        self.seen[(viewer, member, state)] += 1
            self.looks += 1


def _ping_answered(codec: SealedCodec, address: tuple[str, int], target: str) -> bool:
    """Send a sealed ping for ``target``; whether an authentic ack came back within 1 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        frame = codec.seal(
            Ping(7, target).to_wire(),
            channel=Channel.DATAGRAM,
            now=time.time(),
            recipient=identity_tag(target),
        )
        sock.sendto(frame, address)
        try:
            reply, _ = sock.recvfrom(65536)
        except TimeoutError:
            return False
    with contextlib.suppress(Dropped):
        codec.open(reply, channel=Channel.DATAGRAM, now=time.time())
        return True
    return False


def _status_answered(security: TransportSecurity, address: tuple[str, int], target: str) -> bool:
    client = StreamClient(security, identity="probe")
    client.peers.introduce(address, target)

    async def ask() -> bool:
        try:
            await client.request(address, {"rpc": "status", "pool": "rot"}, timeout=3)
        except StreamError:
            return False
        return True

    return asyncio.run(ask())


@pytest.mark.slow
def test_rotation_across_five_agents_while_a_pool_deploys(rmesh: RotationMesh) -> None:
    began = time.monotonic()
    for i, name in enumerate(NAMES):
        rmesh.start_member(name, NAMES[0] if i else None)
    rmesh.wait(
        lambda: all(list(rmesh.view(n).values()).count("alive") == 5 for n in NAMES),
        30,
        "the five agents never agreed",
    )
    old_key = Keyring.load(rmesh.root / "n0.key").primary
    old_ring = Keyring([old_key])
    old_id = old_ring.primary_id.hex()
    old_codec = SealedCodec(old_ring, max_frame=MAX_FRAME, identity="probe")
    old_security = TransportSecurity(Keyring([old_key]))
    gossip = {n: ("127.0.0.1", rmesh.ports[n][0]) for n in NAMES}
    # While the old key is installed, a probe holding it is answered by everyone.
    for name in NAMES:  # (three tries each: a loaded machine may answer late)
        assert any(_ping_answered(old_codec, gossip[name], name) for _ in range(3)), name
        assert any(_status_answered(old_security, gossip[name], name) for _ in range(3)), name

    gate = rmesh.root / "rotated"
    rmesh.cli("n1", "submit", str(paced_pool(rmesh.root, gate)), "--name", "rot")

    def started() -> int:
        """VMs the pool reports running (read at a member that is not the shepherd)."""
        components = rmesh.status("n3", "rot")["components"]
        assert isinstance(components, list)
        return sum(1 for c in components if c["domain"] and c["state"] == "running")

    def one_more(than: int) -> int:
        rmesh.wait(lambda: started() > than, 15, f"the pool stalled at {than} VM(s)")
        return started()

    def rings(keys: list[str]) -> None:
        for name in NAMES:
            ring = rmesh.ring(name)
            assert ring == {"insecure": False, "keys": keys, "primary": keys[0]}, (name, ring)

    # Each step is taken while the pool deploys, and the pool starts one more VM (an order
    # out, a report back) under each state of the rings before the next step.
    with ViewWatch(rmesh) as watch:
        rotation_began = time.monotonic()
        so_far = one_more(0)
        added = rmesh.keygen("n0", "--add")
        new_id = added.split()[1].rstrip(":")
        rings([old_id, new_id])
        so_far = one_more(so_far)
        rmesh.keygen("n2", "--use", new_id)
        rings([new_id, old_id])
        so_far = one_more(so_far)
        rmesh.keygen("n4", "--remove", old_id)
        rings([new_id])
        for name in NAMES:  # ...and each saved it: its key file holds the new key only
            saved = Keyring.load(rmesh.root / f"{name}.key")
            assert len(saved) == 1 and saved.primary_id.hex() == new_id, name
        rotation_took = time.monotonic() - rotation_began
        assert rmesh.status("n0", "rot")["state"] == "deploying"  # held by the gate
        assert started() < VMS
        gate.touch()
        running = rmesh.wait(
            lambda: rmesh.status("n2", "rot")["state"] in ("running", "failed"), 30, "pool stuck"
        )
        time.sleep(1)  # the last reports and views settle under the watch
    final = rmesh.status("n2", "rot")
    assert final["state"] == "running", final

    # Every VM exactly once: no domain name on two hosts, none missing.
    domains = [d for n in NAMES for d in rmesh.domains(n)]
    assert len(domains) == len(set(domains)) == VMS, domains
    components = final["components"]
    assert isinstance(components, list)
    assert set(domains) == {c["domain"] for c in components if c["domain"]}
    # Nobody was declared dead or left while the key changed.
    assert not [k for k in watch.seen if k[2] in ("dead", "left")], watch.seen
    assert watch.looks > 0

    # After removal the old key opens nothing: the same probes go unanswered, each counted.
    before = {n: rmesh.drops(n)["unknown_key"] for n in NAMES}
    dht_before = {n: rmesh.dht_unknown_key(n) for n in NAMES}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # and the DHT port
        for name in NAMES:
            frame = old_codec.seal([0, b"x"], channel=Channel.DHT, now=time.time())
            sock.sendto(frame, ("127.0.0.1", rmesh.ports[name][0] + 1))
    for name in NAMES:
        assert not _ping_answered(old_codec, gossip[name], name), name
        assert not _status_answered(old_security, gossip[name], name), name
    for name in NAMES:
        assert rmesh.drops(name)["unknown_key"] >= before[name] + 2, name
    rmesh.wait(
        lambda: all(rmesh.dht_unknown_key(n) > dht_before[n] for n in NAMES),
        5,
        "an old-key frame to a DHT port was not counted as unknown_key",
    )
    assert all(list(rmesh.view(n).values()).count("alive") == 5 for n in NAMES)

    # Revoking n3 takes it out of every other agent's view within a failure-detection period:
    # a crashed member is declared dead one probe period after it stops answering plus the
    # shortest suspicion timeout (confirmed suspicion) of a mesh of five.
    config = MembershipConfig()
    period = config.probe_interval + suspicion_bounds(config, len(NAMES))[0]
    done = rmesh.sdmesh(
        "ca", "revoke", "--ca", str(rmesh.ca_dir), "n3", "--agent", rmesh.agent("n0")
    )
    assert done.returncode == 0, done.stderr
    others = [n for n in NAMES if n != "n3"]
    took = rmesh.wait(
        lambda: all(rmesh.view(n).get("n3") == "left" for n in others),
        2 * period,
        "n3 was not dropped everywhere",
    )
    assert took <= period, (took, period)
    print(
        f"rotation {rotation_took:.1f} s, pool running {running:.1f} s after the gate, "
        f"revoked n3 out everywhere after {took:.2f} s (period {period:.1f} s), "
        f"test {time.monotonic() - began:.1f} s, non-alive looks {dict(watch.seen)}"
    )
