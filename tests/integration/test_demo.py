"""``make demo`` (scripts/demo) end to end: five agents, a pool spread, healed, terminated;
and nothing left behind, whether it finishes or is interrupted with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo"
SDMESH = ROOT / ".venv" / "bin" / "sdmesh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SDMESH.exists(), reason="the demo runs .venv/bin/sdmesh (make deps)"),
]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def environment(tmp_path: Path) -> dict[str, str]:
    """The demo's temporary directory goes under tmp_path, so leftovers can be seen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDMESH_", "JOURNAL_"))}
    return {**env, "TMPDIR": str(tmp_path)}


def processes_using(path: Path) -> list[str]:
    """Command lines that mention ``path`` (the demo's agents do: their state and key)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(cmdline)
    return found


def section(output: str, heading: str) -> str:
    """The text under a ``== heading`` up to the next one."""
    start = output.index(f"== {heading}")
    end = output.find("\n== ", start + 1)
    return output[start : end if end != -1 else None]


def test_the_demo_runs_end_to_end_and_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(DEMO)],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    output = ANSI.sub("", done.stdout)
    assert done.returncode == 0, f"{output}\n{done.stderr}"

    assert "== A mesh of 5 agents on 127.0.0.1" in output
    assert output.count(" alive ") >= 5  # sdmesh peers: all five
    assert "pool tutorial running" in section(output, "Submit the SmartDomains tutorial pool")
    assert re.search(
        r"^Dashboard \(while the demo runs\): http://127\.0\.0\.1:\d+/  token: \S{16,}$",
        output,
        re.M,
    )

    victim = re.search(r"^== kill -9 (host\d)", output, re.M)
    assert victim is not None
    healed = re.search(
        r"^healed in \d+ s: VMs on (.*), shepherd (host\d), generation (\d) -> (\d)$", output, re.M
    )
    assert healed is not None, output
    vm_hosts, shepherd, before, after = healed.groups()
    assert victim.group(1) not in vm_hosts.split(", ") and shepherd != victim.group(1)
    if f"kill -9 {victim.group(1)} (the pool's shepherd" in output:
        assert int(after) > int(before)  # a new shepherd bumped the generation
    after_heal = section(output, "Status after the heal")
    assert "pool tutorial: running" in after_heal
    assert f" {victim.group(1)} " not in after_heal  # no component left on the dead host

    terminated = section(output, "Terminate the pool from")
    assert "pool tutorial terminated" in terminated and ": none" in terminated
    assert "Demo took" in output and took < 60

    assert list(tmp_path.iterdir()) == []  # the demo's temporary directory is gone
    assert processes_using(tmp_path) == []


def test_ctrl_c_stops_every_agent_and_removes_everything(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [str(DEMO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(tmp_path),
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )
    assert demo.stdout is not None
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "== Submit the SmartDomains" in line:
                break
        assert processes_using(tmp_path), "".join(seen)  # the agents run
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C does
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, "".join(seen) + rest
    assert "Traceback" not in rest
    deadline = time.monotonic() + 5
    while processes_using(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
