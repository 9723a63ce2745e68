"""Start-up and memory of one ``sdmesh join`` process, on loopback, on a quiet machine.

Run: .venv/bin/python bench/agent_startup.py [--runs 10] [--settle 10]
     (no root needed; PYTHONPATH=DIR measures another checkout with the same interpreter)

A seed agent is started and left running; then, --runs times, a second agent is started
joining through it, and we time from the moment its process is spawned (``exec``) until:

  joined    the seed's view (GET /v1/peers) shows the newcomer alive: its gossip endpoint is
            bound and it completed the join (what the mesh sees of it)
  api       the newcomer's own control API answers GET /v1/peers (start-up finished)

Then, once: the newcomer's RSS after --settle seconds idle, and a run under
``python -X importtime`` giving the total import time until its API answered, by package.
Baseline in the same run: a bare interpreter (``python -c pass``) and one that imports what
``sdmesh join`` imports, started and waited for the same way.
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdmesh.testing.api import socket_call

POLL = 0.005


_USED: set[int] = set()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> tuple[int, int]:
    """(gossip, api): gossip free for UDP and TCP, gossip + 1 for UDP (the DHT), api for TCP;
    never handed out twice in this run (a stopped agent's ports may linger in TIME_WAIT)."""
    while True:
        gossip = 20000 + 4 * secrets.randbelow(2500)
        api = gossip + 2
        if _USED & {gossip, gossip + 1, api}:
            continue
        if (
            _bindable(gossip, socket.SOCK_DGRAM)
            and _bindable(gossip, socket.SOCK_STREAM)
            and _bindable(gossip + 1, socket.SOCK_DGRAM)
            and _bindable(api, socket.SOCK_STREAM)
        ):
            _USED.update({gossip, gossip + 1, api})
            return gossip, api


class Agent:
    def __init__(
        self, root: Path, name: str, key: Path, seed: Agent | None, extra: list[str]
    ) -> None:
        self.name = name
        self.socket = root / name / "api.sock"  # the control socket: no token needed
        self.gossip, self.api = free_ports()
        argv = [
            sys.executable,
            *extra,
            "-m",
            "sdmesh",
            "join",
            "--name",
            name,
            "--bind",
            f"127.0.0.1:{self.gossip}",
            "--api",
            f"127.0.0.1:{self.api}",
            "--key-file",
            str(key),
            "--state-dir",
            str(root / name),
        ]
        if seed is not None:
            argv += ["--peer", f"127.0.0.1:{seed.gossip}"]
        self.stderr = root / f"{name}.stderr"
        with open(self.stderr, "wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)

    def peers(self) -> dict[str, str] | None:
        try:
            status, peers = socket_call(self.socket, "GET", "/v1/peers", timeout=2)
        except (OSError, ValueError):
            return None
        if status != 200 or not isinstance(peers, list):
            return None
        return {p["name"]: p["state"] for p in peers}

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(check: object, timeout: float = 60.0) -> float | None:
    """Poll ``check()`` until true; monotonic time when it was, None on timeout."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL)
    return None


def one_newcomer(
    root: Path, seed: Agent, key: Path, name: str, extra: list[str]
) -> tuple[Agent, float | None, float | None, float | None]:
    """(agent, exec -> joined, exec -> API, CPU seconds it had used when its API answered)."""
    agent = Agent(root, name, key, seed, extra)
    joined = api = cpu = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (joined is None or api is None):
        now = time.monotonic()
        if joined is None and (seed.peers() or {}).get(name) == "alive":
            joined = now - agent.started
        if api is None and agent.peers() is not None:
            api = now - agent.started
            cpu = agent.cpu_seconds()
        if agent.proc.poll() is not None:
            break
        time.sleep(POLL)
    return agent, joined, api, cpu


def import_totals(stderr: Path) -> tuple[float, list[tuple[str, float]]]:
    """Total import ms from ``-X importtime`` output, and the biggest top-level packages."""
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stderr.read_text(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if not m:
            continue
        us, name = int(m.group(1)), m.group(2)
        parts = name.split(".")
        package = ".".join(parts[:2]) if parts[0] == "sdmesh" else parts[0].lstrip("_")
        by_package[package] += us
        total += us
    return total / 1000, [(p, us / 1000) for p, us in by_package.most_common(12)]


def bare_interpreter(code: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.monotonic() - t)
    return times


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"median {statistics.median(values):.3f} s  "
        f"[{min(values):.3f}-{max(values):.3f}]  n={len(values)}"
    )


def compile_sdmesh() -> Path:
    """Byte-compile sdmesh, as installing it does: with PYTHONDONTWRITEBYTECODE set and no
    __pycache__ yet, every agent would compile sdmesh from source at each start."""
    import compileall

    import sdmesh

    package = Path(sdmesh.__file__).parent
    compileall.compile_dir(package, quiet=1)
    return package


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="newcomers started (default 10)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds before RSS (default 10)")
    args = ap.parse_args()
    print(f"sdmesh from {compile_sdmesh()} (byte-compiled), python {sys.version.split()[0]}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="sdmesh-startup-") as tmp:
        root = Path(tmp)
        key = root / "cluster.key"
        key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key.chmod(0o600)
        seed = Agent(root, "seed", key, None, [])
        agents = [seed]
        try:
            if wait_for(lambda: seed.peers() is not None) is None:
                print(seed.stderr.read_text(), file=sys.stderr)
                return 1
            joined: list[float] = []
            api: list[float] = []
            cpu: list[float] = []
            for i in range(args.runs):
                agent, j, a, c = one_newcomer(root, seed, key, f"n{i}", [])
                if c is not None:
                    cpu.append(c)
                if j is not None:
                    joined.append(j)
                if a is not None:
                    api.append(a)
                if i < args.runs - 1:
                    agent.stop()
                else:
                    agents.append(agent)
            print(f"exec -> seen alive by the seed (joined): {stats(joined)}")
            print(f"exec -> own API answering:               {stats(api)}")
            print(f"CPU (user+sys) used by then:             {stats(cpu)}")
            time.sleep(args.settle)
            print(
                f"RSS after {args.settle:.0f} s idle: newcomer {agents[-1].rss_mb():.1f} MB, "
                f"seed {seed.rss_mb():.1f} MB  (VmRSS of /proc/PID/status)"
            )
            traced, _, traced_api, _ = one_newcomer(root, seed, key, "traced", ["-X", "importtime"])
            agents.append(traced)
            if traced_api is None:
                tail = traced.stderr.read_text(errors="replace").splitlines()
                tail = [line for line in tail if not line.startswith("import time")]
                print(f"traced agent: no API (rc={traced.proc.poll()}): {tail[-3:]}")
            total, top = import_totals(traced.stderr)
            print(
                f"-X importtime, one agent, imports until its API answered: {total:.0f} ms "
                f"(exec -> API {traced_api or float('nan'):.3f} s under importtime)"
            )
            print("  " + ", ".join(f"{p} {ms:.0f}" for p, ms in top))
        finally:
            for agent in reversed(agents):
                agent.stop()
    print(f"baseline: python -c pass:                {stats(bare_interpreter('pass', 5))}")
    code = "import sdmesh.cli.main, sdmesh.agent.agent"
    print(f"baseline: python -c '{code}' (import only): {stats(bare_interpreter(code, 5))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
