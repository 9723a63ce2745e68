"""`sdmesh force-leave` between real agents on loopback: a member killed with -9 is dead
everywhere, an operator forces it out through one agent, and every agent then shows it left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from .test_agent_loopback import Mesh


def force_leave(
    mesh: Mesh, through: str, node: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """The CLI, as an operator runs it, against ``through``'s agent."""
    agent = mesh.agent(through)
    return subprocess.run(
        [sys.executable, "-m", "sdmesh", "force-leave", node, "--agent", agent, *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_killed_member_is_forced_out_and_every_view_shows_it_left(mesh: Mesh) -> None:
    for name, seed in (("a", None), ("b", "a"), ("c", "a")):
        mesh.start(name, seed)
    everyone = {name: "alive" for name in "abc"}
    mesh.wait(lambda: all(mesh.view(n) == everyone for n in "abc"), 15, "views never agreed")

    # Alive and unknown members are refused, with the reason, and nothing changes.
    refused = force_leave(mesh, "a", "c")
    assert refused.returncode == 2, refused
    assert (
        refused.stderr.strip() == "sdmesh: error: c is alive; only failed members can be forced out"
    )
    unknown = force_leave(mesh, "a", "nobody", "--json")
    assert unknown.returncode == 2 and "nobody is not a member" in unknown.stderr
    assert mesh.view("b") == everyone

    os.kill(mesh.procs["c"].pid, signal.SIGKILL)
    mesh.procs["c"].wait(timeout=10)
    mesh.wait(lambda: all(mesh.view(n).get("c") == "dead" for n in "ab"), 20, "c never dead")

    done = force_leave(mesh, "b", "c", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["name"] == "c" and answer["outcome"] == "left" and answer["state"] == "left"
    assert mesh.view("b")["c"] == "left"  # at once where it was forced
    mesh.wait(lambda: mesh.view("a").get("c") == "left", 10, "a never learned c left")
    assert mesh.view("a") == mesh.view("b") == {"a": "alive", "b": "alive", "c": "left"}

    again = force_leave(mesh, "a", "c")
    assert again.returncode == 0 and "already left" in again.stdout
