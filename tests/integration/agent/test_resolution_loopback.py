"""Issue 11.5 against a real `sdmesh join`: descriptors posted to its API read nothing of the
agent's (its cluster key, /etc/shadow, its environment, files in its working directory), no
descriptor inflates it, `#include "/proc/kmsg"` does not hang it, and SIGTERM still stops it
after all of them."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .test_agent_loopback import Mesh

SECRET = "sdmesh-agent-secret-9d2e"
HEAD = '#include "/org/smartfrog/components.sf"\n'


def post(mesh: Mesh, name: str, descriptor: str) -> tuple[int, str, float]:
    """(status, body, seconds) of ``POST /v1/pools`` with a hand-written descriptor."""
    data = json.dumps({"name": "hostile", "descriptor": descriptor}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.ports[name][1]}/v1/pools",
        data=data,
        method="POST",
        # Loopback TCP is no credential: the mesh's admin token (its agents' api-token-file).
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {mesh.token}"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), time.monotonic() - started


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the agent's resolve worker, once it has one)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def test_hostile_descriptors_read_nothing_and_sigterm_still_works(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "agent-cwd"
    workdir.mkdir()
    (workdir / "local.sf").write_text(f'leak "{SECRET}";\n')
    monkeypatch.chdir(workdir)  # the agent inherits this working directory...
    monkeypatch.setenv("SDMESH_TEST_SECRET", SECRET)  # ...and this environment
    mesh.start("a")
    key_text = mesh.key.read_text().strip()
    doubling = " ".join(f"s{i} (s{i - 1} ++ s{i - 1});" for i in range(1, 60))
    fan = " ".join(f"v{i} [{', '.join([f'v{i - 1}'] * 9)}];" for i in range(1, 12))
    cases = {
        "cluster key": f'#include "{mesh.key}"\nsfConfig extends {{ }}\n',
        "shadow": '#include "/etc/shadow"\nsfConfig extends { }\n',
        "environment": "sfConfig extends { v ENVPROPERTY SDMESH_TEST_SECRET; }\n",
        "cwd": '#include "local.sf"\nsfConfig extends { x leak; }\n',
        "doubling": f'{HEAD}sfConfig extends Compound {{ s0 "xxxxxxxxxxxxxxxx"; {doubling} }}\n',
        "fan-out": f"{HEAD}sfConfig extends Compound {{ v0 [|1,2,3,4,5,6,7,8,9|]; {fan} }}\n",
        "kmsg": '#include "/proc/kmsg"\nsfConfig extends { }\n',
    }
    answers = {case: post(mesh, "a", text) for case, text in cases.items()}
    for case, (status, body, seconds) in answers.items():
        assert status == 400, (case, status, body)
        assert seconds < 10, (case, seconds)
        assert SECRET not in body and "root:" not in body, (case, body)
        assert key_text not in body and str(workdir) not in body, (case, body)
    assert "max_string" in answers["doubling"][1]
    assert "max_vector" in answers["fan-out"][1]
    assert '"/proc/kmsg" is neither in the built-in library' in answers["kmsg"][1]
    pid = mesh.procs["a"].pid
    assert peak_rss_mib(pid) < 400
    assert mesh.api("a", "/v1/health") is not None  # still serving
    helpers = children(pid)
    began = time.monotonic()
    mesh.procs["a"].send_signal(signal.SIGTERM)
    assert mesh.procs["a"].wait(timeout=15) == 0
    assert time.monotonic() - began < 15
    deadline = time.monotonic() + 10  # its resolve worker, if any, goes with it
    while not all(gone(child) for child in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(child) for child in helpers), helpers
