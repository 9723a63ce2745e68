"""Host identities, revocation, key rotation and reload between real agents on loopback.

Every agent gets a key and a certificate from one CA (written where the agent looks by
default, ``STATE_DIR/identity``), and ``SDMESH_IDENTITY_CA`` (inherited) turns them on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.safeio import write_private
from sdmesh.trust.identity import sign_certificate
from sdmesh.trust.keys import OperatorKey, write_key_pair

from .test_agent_loopback import Mesh, free_port


class IdentityMesh(Mesh):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ca = OperatorKey.generate("cluster-ca")
        self.ca_dir = root / "ca"
        self.ca_dir.mkdir(mode=0o700)
        private, public = write_key_pair(self.ca, self.ca_dir)
        private.rename(self.ca_dir / "ca.key")
        public.rename(self.ca_dir / "ca.pub")
        self.serial = 0
        self.operators = root / "operators.d"
        self.operators.mkdir(mode=0o755)

    def enrol(self, name: str, *, as_name: str | None = None) -> None:
        """Give agent ``name`` a key and a certificate (for ``as_name``, if given)."""
        home = self.root / name / "identity"
        home.mkdir(parents=True, exist_ok=True)
        key = OperatorKey.generate(name)
        write_private(home / "host.key", key.file_text().encode(), 0o600)
        self.serial += 1
        now = int(time.time())
        cert = sign_certificate(
            self.ca, as_name or name, key.public, self.serial, now - 60, now + 3600
        )
        write_private(home / "host.cert", cert.file_text().encode(), 0o644)
        issued = self.ca_dir / "issued"
        with issued.open("a") as out:
            out.write(f"{self.serial} {as_name or name}\n")

    def post(self, name: str, path: str, body: object) -> object:
        import urllib.request

        request = urllib.request.Request(
            self.url(name) + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={**self.headers(), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def drops(self, name: str) -> dict[str, int]:
        health = self.api(name, "/v1/health")
        assert isinstance(health, dict)
        return dict(health["drops"])

    def address_of(self, viewer: str, member: str) -> str | None:
        peers = self.api(viewer, "/v1/peers")
        assert isinstance(peers, list)
        return next((p["address"] for p in peers if p["name"] == member), None)

    def start_rogue(self, name: str, seed: str) -> subprocess.Popen[bytes]:
        """An agent with the cluster key but no identity (no CA configured), named ``name``."""
        gossip, api = free_port(pair=True), free_port()
        env = {k: v for k, v in os.environ.items() if k != "SDMESH_IDENTITY_CA"}
        args = [sys.executable, "-m", "sdmesh", "join", "--name", name]
        args += ["--bind", f"127.0.0.1:{gossip}", "--api", f"127.0.0.1:{api}"]
        args += ["--key-file", str(self.key), "--state-dir", str(self.root / "rogue")]
        args += ["--peer", f"127.0.0.1:{self.ports[seed][0]}"]
        log = (self.root / "rogue.log").open("wb")
        rogue = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        self.procs["rogue"] = rogue
        return rogue

    def sdmesh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sdmesh", *args], capture_output=True, text=True, timeout=90
        )


@pytest.fixture
def idmesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityMesh]:
    mesh = IdentityMesh(tmp_path)
    monkeypatch.setenv("SDMESH_IDENTITY_CA", str(mesh.ca_dir / "ca.pub"))
    monkeypatch.setenv("SDMESH_OPERATORS_DIR", str(mesh.operators))
    try:
        yield mesh
    finally:
        mesh.stop()


def agreed(mesh: Mesh, names: str) -> bool:
    everyone = {name: "alive" for name in names}
    return all(mesh.view(n) == everyone for n in names)


def test_nobody_joins_as_b_and_a_revoked_host_is_out(idmesh: IdentityMesh) -> None:
    for name in "abc":
        idmesh.enrol(name)
    idmesh.start("a")
    idmesh.start("b", seed="a")
    idmesh.start("c", seed="a")
    idmesh.wait(lambda: agreed(idmesh, "abc"), 20, "views never agreed")
    b_address = idmesh.address_of("a", "b")

    # A rogue holding the cluster key, calling itself b, without b's key: its claims are
    # refused, and b's address does not flap anywhere.
    rogue = idmesh.start_rogue("b", seed="a")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for viewer in "ac":
            assert idmesh.address_of(viewer, "b") == b_address
            assert idmesh.view(viewer).get("b") == "alive"
        time.sleep(0.5)
    rogue.send_signal(signal.SIGTERM)  # its (unsigned) leave is refused too
    rogue.wait(timeout=20)
    time.sleep(2)
    assert idmesh.view("a").get("b") == idmesh.view("c").get("b") == "alive"
    refused = idmesh.drops("a")
    assert refused["identity_unsigned"] > 0, refused

    # Revoking c is one command; it is out everywhere within a failure-detection period.
    done = idmesh.sdmesh(
        "ca", "revoke", "--ca", str(idmesh.ca_dir), "c", "--agent", idmesh.agent("a")
    )
    assert done.returncode == 0, done.stderr
    took = idmesh.wait(
        lambda: idmesh.view("a").get("c") == "left" and idmesh.view("b").get("c") == "left",
        10,
        "c was never dropped",
    )
    assert took < 10
    print(f"revoked c was left at a and b after {took:.2f} s")
    time.sleep(2)  # c keeps talking; it stays out
    assert idmesh.view("b").get("c") == "left"


def test_rotation_across_the_running_mesh_and_reload(idmesh: IdentityMesh) -> None:
    for name in "abc":
        idmesh.enrol(name)
    idmesh.start("a")
    idmesh.start("b", seed="a")
    idmesh.start("c", seed="a")
    idmesh.wait(lambda: agreed(idmesh, "abc"), 20, "views never agreed")
    old_key_file = idmesh.root / "old.key"
    old_key_file.write_bytes(idmesh.key.read_bytes())
    old_key_file.chmod(0o600)
    old_id = idmesh.api("a", "/v1/keyring")["primary"]  # type: ignore[index]

    added = idmesh.sdmesh("keygen", "--add", "--agent", idmesh.agent("b"))
    assert added.returncode == 0, added.stderr + added.stdout
    new_id = added.stdout.split()[1].rstrip(":")
    used = idmesh.sdmesh("keygen", "--use", new_id, "--agent", idmesh.agent("b"))
    assert used.returncode == 0, used.stderr + used.stdout
    removed = idmesh.sdmesh("keygen", "--remove", old_id, "--agent", idmesh.agent("c"))
    assert removed.returncode == 0, removed.stderr + removed.stdout
    for name in "abc":
        ring = idmesh.api(name, "/v1/keyring")
        assert ring == {"insecure": False, "keys": [new_id], "primary": new_id}, (name, ring)
    # Each agent saved its ring: the key file now holds the new key only.
    assert idmesh.key.read_text().count("\n") == 1
    time.sleep(3)
    assert agreed(idmesh, "abc")

    # After removal the old key opens nothing: an agent holding it never gets in.
    idmesh.enrol("d")
    idmesh.start("d", seed="a", key=old_key_file)
    time.sleep(5)
    assert set(idmesh.view("d")) == {"d"}
    assert "d" not in idmesh.view("a")
    assert idmesh.drops("a")["unknown_key"] > 0

    # SIGHUP does not kill the agent; it reloads the trust store (and the rest).
    operator = OperatorKey.generate("alice")
    _, alice_pub = write_key_pair(operator, idmesh.root)
    trusted = idmesh.sdmesh(
        "operator", "trust", str(alice_pub), "--role", "operate", "--dir", str(idmesh.operators)
    )
    assert trusted.returncode == 0, trusted.stderr
    os.kill(idmesh.procs["a"].pid, signal.SIGHUP)
    idmesh.wait(
        lambda: "reloaded cluster-key (ok)" in (idmesh.root / "a.log").read_text(), 10, "no reload"
    )
    assert idmesh.procs["a"].poll() is None
    assert idmesh.api("a", "/v1/health") is not None
    log = (idmesh.root / "a.log").read_text()
    assert "reloaded cluster-key (ok), operators (ok), identity (ok)" in log
    assert "identity (ok)" in log and "; 1 operator key(s) trusted" in log
    report = idmesh.post("a", "/v1/reload", {})
    assert report == {
        "cluster-key": [],
        "operators": [],
        "identity": [],
        "records": [],  # the records shepherded here, sealed again after a renewal
        "api-tokens": [],
    }


def test_a_loose_key_file_is_refused(idmesh: IdentityMesh) -> None:
    idmesh.key.chmod(0o644)
    idmesh.enrol("a")
    with pytest.raises(AssertionError, match="0644"):
        idmesh.start("a")
