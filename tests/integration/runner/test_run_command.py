"""`sdmesh run` on the embedded test host, as a user runs it: a real process and signals."""

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

EXAMPLES = Path(__file__).resolve().parents[3] / "descriptors" / "examples"


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _stop_leftover_runs() -> Iterator[None]:
    """A failing assertion must not orphan an `sdmesh run` (it would hold its pool forever)."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def start_run(state: Path, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sdmesh", "run", "--json", "--state-dir", str(state), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _started.append(process)
    return process


LAST_VM = "sfConfig:pool:smartDomain3:domain3"


def wait_until_running(
    process: subprocess.Popen[str], path: str = LAST_VM, timeout: float = 30
) -> list[dict[str, object]]:
    """Events until ``path`` runs (a Parallel with asynchCreateChild is running before its
    children are, as in SmartFrog)."""
    assert process.stdout is not None
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        events.append(event)
        if event["path"] == path and event["state"] == "running":
            return events
    raise AssertionError(
        f"never running; stderr: {process.stderr.read() if process.stderr else ''}"
    )


def leftovers(state: Path) -> list[str]:
    volumes = state / "volumes"
    found = [str(p) for p in volumes.rglob("*") if p.is_file() and "locks" not in p.parts]
    runs = state / "runs"
    found += [str(p) for p in runs.glob("*.lock")] if runs.exists() else []
    return found


def test_run_then_sigint_leaves_nothing(tmp_path: Path) -> None:
    process = start_run(tmp_path, str(EXAMPLES / "demoPool.sf"))
    events = wait_until_running(process)
    assert set(events[0]) == {"pool", "path", "kind", "state", "host", "domain"}
    assert events[0]["pool"] == "demoPool"
    running = {e["path"] for e in events if e["state"] == "running"}
    assert {"sfConfig", "sfConfig:pool:smartDomain1:domain1", LAST_VM} <= running
    assert any(p.suffix for p in (tmp_path / "volumes" / "simulated").iterdir())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) | {"host": None} == {
        "pool": "demoPool",
        "path": "sfConfig",
        "kind": "Compound",
        "state": "terminated",
        "host": None,
        "domain": None,
    }
    assert leftovers(tmp_path) == []


def test_sigterm_is_a_clean_termination_too(tmp_path: Path) -> None:
    process = start_run(tmp_path, str(EXAMPLES / "demoPool.sf"))
    wait_until_running(process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 0 and leftovers(tmp_path) == []


def test_a_crashed_run_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    first = start_run(tmp_path, "--name", "crashy", str(EXAMPLES / "demoPool.sf"))
    wait_until_running(first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=10)
    assert leftovers(tmp_path), "a crash leaves volumes and the run lock behind"
    second = start_run(tmp_path, "--name", "other", str(EXAMPLES / "demoPool.sf"))
    wait_until_running(second)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=30)
    assert "removed" in err and "leftover" in err
    assert leftovers(tmp_path) == []


def test_same_pool_twice_is_refused(tmp_path: Path) -> None:
    first = start_run(tmp_path, str(EXAMPLES / "demoPool.sf"))
    wait_until_running(first)
    second = start_run(tmp_path, str(EXAMPLES / "demoPool.sf"))
    _, err = second.communicate(timeout=30)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=30)
    assert second.returncode == 1 and "already running here" in err


def test_deploy_failure_exits_1_and_names_the_component(tmp_path: Path) -> None:
    process = start_run(tmp_path, str(EXAMPLES / "localVirtualPool.sf"))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "failed: sfConfig:domain1: ip '999.999.999.999' is not an IPv4 address" in err
    failed = [json.loads(line) for line in out.splitlines() if '"failed"' in line]
    assert [e["path"] for e in failed] == ["sfConfig:domain1", "sfConfig"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["no-such-file.sf"])
def test_bad_descriptor_exits_2(tmp_path: Path, bad: str) -> None:
    process = start_run(tmp_path, bad)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "Traceback" not in err


def test_a_bad_disk_size_fails_its_storage_component(tmp_path: Path) -> None:
    """`size` reaches the storage backend; one it cannot read fails that disk, named."""
    descriptor = tmp_path / "sized.sf"
    descriptor.write_text(
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        "sfConfig extends Compound {\n"
        '    disk extends Qcow2OverlayBackend { baseImage "/img/base.qcow2"; size "10X"; }\n'
        "    vm extends KvmDomain { memory 128; storageBackend LAZY ATTRIB disk; }\n"
        "}\n"
    )
    process = start_run(tmp_path / "state", str(descriptor))
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "sfConfig:disk: size '10X' is not a whole number of bytes" in err
    assert leftovers(tmp_path / "state") == []
