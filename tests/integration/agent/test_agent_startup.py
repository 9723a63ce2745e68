"""`sdmesh join` start-up order: membership first, the hypervisor, DHT and API after."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .test_agent_loopback import Mesh, free_port


def test_the_mesh_learns_the_capacity_found_after_joining(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        mesh.start("a")
        mesh.start("b", seed="a")

        def b_as_a_sees_it() -> dict[str, object]:
            peers = mesh.api("a", "/v1/peers")
            assert isinstance(peers, list)
            return next((p for p in peers if p["name"] == "b"), {})

        mesh.wait(
            lambda: (b_as_a_sees_it().get("meta") or {}).get("capacity", {}).get("vcpus") == 64,
            15,
            f"a never learned b's capacity: {b_as_a_sees_it()}",
        )
        assert b_as_a_sees_it()["state"] == "alive"
        assert b_as_a_sees_it()["incarnation"] >= 1, "the capacity came as a metadata update"
    finally:
        mesh.stop()


def test_an_agent_that_joined_then_failed_to_start_leaves_gracefully(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        mesh.start("a")
        gossip, api = free_port(pair=True), free_port()
        args = [
            *(sys.executable, "-m", "sdmesh", "join", "--name", "b"),
            *("--bind", f"127.0.0.1:{gossip}", "--api", f"127.0.0.1:{api}"),
            *("--key-file", str(mesh.key), "--state-dir", str(tmp_path / "b")),
            *("--peer", f"127.0.0.1:{mesh.ports['a'][0]}"),
            # No libvirtd behind this socket: the hypervisor cannot be opened.
            *("--hypervisor", f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"),
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert done.returncode == 1, done.stderr
        assert "cannot connect" in done.stderr
        # b joined before it opened its hypervisor, so a knows it; it left, it did not die.
        mesh.wait(lambda: mesh.view("a").get("b") == "left", 10, f"a sees {mesh.view('a')}")
    finally:
        mesh.stop()
