"""Mesh figures on real processes: join, failure detection, idle cost; Serf and sdmesh alike.

Run (root): .venv/bin/python bench/mesh_join_failure.py --agent serf[,sdmesh] [--sizes 10,30,60]
            [--mass-joins 10] [--quick]

Every agent is a separate process in its own network namespace (sdmesh.testing.netns), with
its own address on one private bridge, sealed with a cluster key. For each N, and each agent
kind in turn (same machine, same run):

  join      host 0 starts; once it answers, the N-1 others are started at once, all joining
            through it. Seconds from that moment until every agent's view has all N alive.
            Repeated --join-runs times, --mass-joins times at the largest N.
  join/logs the same join, read from the agents' logs instead of their APIs: every agent logs
            each member it learns of (sdmesh: "member h3 (...) unknown -> alive"; Serf:
            "EventMemberJoin: h3"), so a thread tailing the logs every 20 ms sees when each
            view became whole, API or not (sdmesh serves its API last, after joining)
  all up    seconds until every agent answers its local API (process start-up: for a Python
            agent on 2 cores this alone is seconds, so read join against it). Views are read
            through that API, so no join time can be shorter; "join-up" is join minus all up
  floor     sdmesh only, same testbed, just before the agents of the first --floor-runs runs
            of each N: the N-1 joiners' interpreters started at once in their namespaces,
            each importing what `sdmesh join` imports; seconds until the last had done so.
            "j": what it imports before it binds the gossip port and joins; "all":
            everything a running agent imported (read from one agent run under python -X
            importtime at the start of the bench). Python start-up alone, no protocol
  holes     runs where some agent still missed a member after --hole-limit seconds
            (--hole-follow S keeps watching to report when the hole closed)
  failure   kill -9 of one agent (never the seed) after each converged join: seconds until
            every remaining agent reports it failed/dead
  idle      once the first converged join of each N has settled: CPU (% of one core) and
            RSS of each agent over --idle-seconds, no polling meanwhile; mean over the agents
            (and the busiest one)

Views are polled in-process over sockets inside each namespace (Serf's RPC, sdmesh's
GET /v1/peers), only agents not yet converged, every --interval s; "poll res." is the worst
gap between two polls of one agent, the error bar of every time above. Figures only: nothing
here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, ClassVar

from sdmesh.testing.agents import (
    AgentKind,
    AgentNotAnswering,
    SdmeshAgent,
    SerfAgent,
    View,
    all_alive,
    reports_gone,
    wait_answering,
    wait_views,
)
from sdmesh.testing.netns import Host, NetnsError, Proc, Testbed, skip_reason

SERF_JOIN = {10: 0.26, 30: 0.70, 60: 1.31}
SERF_FAILURE = {10: 5.7, 30: 7.2, 60: 9.2}
"""Serf as measured when the issue was written (LAN profile): seconds, by N. Also: 2 of 10
mass joins at N = 60 left a member unknown for over a minute; idle 0.3 % of a core, 15 MB."""


@dataclass
class RunResult:
    join: float | None
    all_up: float | None
    spawn: float
    missing: list[str]
    exited: list[str]
    failure: float | None = None
    failure_missing: list[str] = field(default_factory=list)
    hole_closed: float | None = None
    join_resolution: float = 0.0
    failure_resolution: float = 0.0
    join_logs: float | None = None
    """The join as the agents' logs tell it (see LogViews)."""
    floor_join: float | None = None
    """Start-up floor: N-1 interpreters importing what `sdmesh join` imports before joining."""
    floor_all: float | None = None
    """Start-up floor: N-1 interpreters importing everything a running agent imported."""


@dataclass
class SizeResult:
    agent: str
    n: int
    runs: list[RunResult] = field(default_factory=list)
    idle_cpu_mean: float | None = None
    idle_cpu_max: float | None = None
    idle_rss_mean_mb: float | None = None
    idle_rss_max_mb: float | None = None


class _Recorder:
    """An AgentKind proxy noting when each agent first answered (its start-up time)."""

    def __init__(self, kind: AgentKind, since: float) -> None:
        self.kind = kind
        self.name = kind.name
        self.since = since
        self.first_answer: dict[str, float] = {}

    def unavailable(self) -> str | None:
        return self.kind.unavailable()

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        return self.kind.start(host, seeds, key=key)

    def members(self, host: Host) -> View:
        view = self.kind.members(host)
        self.first_answer.setdefault(host.name, time.monotonic() - self.since)
        return view

    def close(self) -> None:
        self.kind.close()


def make_kind(name: str, testbed: Testbed, args: argparse.Namespace) -> AgentKind:
    if name == "serf":
        return SerfAgent(testbed, profile=args.profile, log_level=args.log_level)
    if name == "sdmesh":
        return SdmeshAgent(testbed)
    raise SystemExit(f"mesh_join_failure: unknown agent {name!r} (serf, sdmesh)")


class LogViews:
    """Each agent's view as its log tells it, timestamped when the lines appear.

    A thread reads what every registered agent appended to its log every ``interval`` s
    and replays the member transitions it logged; ``complete[host]`` is when that host's
    view first had every other name alive (seconds after ``since``).
    """

    SDMESH = re.compile(r"member (\S+) \([^)]*\) \w+ -> (\w+)")
    SERF = re.compile(r"serf: EventMember(Join|Failed|Leave): (\S+)")
    SERF_STATES: ClassVar[dict[str, str]] = {"Join": "alive", "Failed": "dead", "Leave": "left"}

    def __init__(self, kind: str, names: Sequence[str], since: float, interval: float = 0.02):
        self.kind = kind
        self.names = list(names)
        self.since = since
        self.interval = interval
        self.complete: dict[str, float | None] = {name: None for name in names}
        self._files: dict[str, tuple[Proc, IO[str], dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, proc: Proc) -> None:
        log = open(proc.log_path, errors="replace")  # noqa: SIM115 - closed in stop()
        with self._lock:
            self._files[proc.host.name] = (proc, log, {})

    @property
    def last(self) -> float | None:
        times = list(self.complete.values())
        return None if None in times else max(t for t in times if t is not None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            files = list(self._files.items())
        for host, (_, log, states) in files:
            text = log.read()
            if not text:
                continue
            now = time.monotonic() - self.since
            for line in text.splitlines():
                if self.kind == "sdmesh":
                    m = self.SDMESH.search(line)
                    if m:
                        states[m.group(1)] = m.group(2)
                else:
                    m = self.SERF.search(line)
                    if m:
                        states[m.group(2)] = self.SERF_STATES[m.group(1)]
            if self.complete[host] is None and all(
                states.get(name) == "alive" for name in self.names if name != host
            ):
                self.complete[host] = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        with self._lock:
            for _, log, _ in self._files.values():
                log.close()


#: What ``sdmesh join`` imports before it binds the gossip port and joins: the CLI, the
#: ``join`` command and the agent module (which defers its heavy parts until after joining).
JOIN_IMPORTS = ("sdmesh.cli.main", "sdmesh.cli.mesh", "sdmesh.agent.agent")


def agent_imports() -> list[str]:
    """Every module a running ``sdmesh join`` imported (one agent, alone, under
    ``python -X importtime`` until its API answers), in the order they finished loading."""
    with Testbed(1) as tb:
        kind = SdmeshAgent(tb, command=(sys.executable, "-X", "importtime", "-m", "sdmesh"))
        proc = kind.start(tb[0], [])
        try:
            wait_answering(kind, [tb[0]], timeout=60)
        finally:
            proc.kill()
        names: list[str] = []
        for line in proc.log().splitlines():
            # "import time: self | cumulative | name"; nesting is not needed (and the agent's
            # imports in a worker thread blur it): importing every name loads the same set.
            if line.startswith("import time:") and line.count("|") == 2:
                name = line.rpartition("|")[2].strip()
                if name and " " not in name and "__main__" not in name and name not in names:
                    names.append(name)
    if "sdmesh.agent.agent" not in names:
        raise SystemExit(f"mesh_join_failure: could not read the agent's imports: {names[:10]}")
    return names


def startup_floor(tb: Testbed, hosts: Sequence[Host], modules: Sequence[str]) -> float | None:
    """Seconds until the last of ``hosts``' interpreters, all started at once, had imported
    ``modules`` (None if one failed). Each prints ``time.monotonic()`` (one clock for every
    namespace) once done, then exits without tearing down. A module that cannot be imported
    is skipped (importtime also lists failed optional imports, e.g. ``_winapi``)."""
    code = (
        "import importlib, os, sys, time\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "print(time.monotonic(), flush=True)\n"
        "os._exit(0)\n"
    )
    t0 = time.monotonic()
    argv = [sys.executable, "-c", code, *modules]
    procs = [tb.run(host, argv, label="floor") for host in hosts]
    last = 0.0
    for proc in procs:
        try:
            rc = proc.popen.wait(timeout=300)
            done = float(proc.log().split()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            rc = None
        if rc != 0:
            proc.kill()
            print(f"      floor: {proc.host.name} failed: {proc.log()[-300:]}", flush=True)
            return None
        last = max(last, done - t0)
    return last


def one_run(
    name: str, n: int, args: argparse.Namespace, result: SizeResult, index: int = 0
) -> RunResult:
    """One mass join of n agents, then (if it converged) a kill -9; the first converged
    run of each N also measures the idle cost before the kill."""
    with Testbed(n, workdir=_run_dir(args, name, n), keep_logs=args.keep_logs is not None) as tb:
        kind = make_kind(name, tb, args)
        try:
            seed, others = tb[0], tb.hosts[1:]
            floor_join = floor_all = None
            if name == "sdmesh" and index < args.floor_runs and args.imports:
                floor_join = startup_floor(tb, others, JOIN_IMPORTS)
                floor_all = startup_floor(tb, others, args.imports)
            procs = {seed.name: kind.start(seed, [])}
            wait_answering(kind, [seed], timeout=30)
            names = [h.name for h in tb]
            t0 = time.monotonic()
            logs = LogViews(name, names, t0)
            logs.watch(procs[seed.name])
            for host in others:
                procs[host.name] = kind.start(host, [seed])
                logs.watch(procs[host.name])
            spawn = time.monotonic() - t0
            recorder = _Recorder(kind, t0)
            joined = wait_views(
                recorder,
                tb.hosts,
                all_alive(names),
                timeout=args.hole_limit,
                interval=args.interval,
                since=t0,
            )
            logs.stop()
            up = recorder.first_answer
            run = RunResult(
                join=joined.last,
                join_logs=logs.last,
                all_up=max(up.values()) if len(up) == n else None,
                spawn=spawn,
                missing=joined.missing,
                exited=[p.host.name for p in procs.values() if not p.alive()],
                join_resolution=joined.resolution,
                floor_join=floor_join,
                floor_all=floor_all,
            )
            if not joined.complete:
                _report_hole(kind, tb, joined.missing, procs, args)
                if args.hole_follow > 0:  # how long does the hole stay open?
                    closed = wait_views(
                        kind,
                        [h for h in tb if h.name in joined.missing],
                        all_alive(names),
                        timeout=args.hole_follow,
                        interval=max(args.interval, 0.5),
                        since=t0,
                    )
                    run.hole_closed = closed.last
                    print(
                        "      hole "
                        + (
                            f"closed {closed.last:.1f}s after the join started"
                            if closed.last is not None
                            else f"still open after {args.hole_limit + args.hole_follow:.0f}s"
                        ),
                        flush=True,
                    )
                return run
            if result.idle_cpu_mean is None:
                _measure_idle(list(procs.values()), args, result)
            victim = tb[n - 1]
            t1 = time.monotonic()
            tb.kill(procs[victim.name])
            gone = wait_views(
                kind,
                tb.hosts[:-1],
                reports_gone(victim.name),
                timeout=args.failure_timeout,
                interval=args.interval,
                since=t1,
            )
            run.failure = gone.last
            run.failure_missing = gone.missing
            run.failure_resolution = gone.resolution
            return run
        finally:
            kind.close()


def _measure_idle(procs: list[Proc], args: argparse.Namespace, result: SizeResult) -> None:
    time.sleep(args.settle)
    live = [p for p in procs if p.alive()]
    start_cpu = {p.pid: p.cpu_seconds() for p in live}
    t = time.monotonic()
    time.sleep(args.idle_seconds)
    wall = time.monotonic() - t
    cpu = [100 * (p.cpu_seconds() - start_cpu[p.pid]) / wall for p in live if p.alive()]
    rss = [p.rss_bytes() / 2**20 for p in live if p.alive()]
    result.idle_cpu_mean, result.idle_cpu_max = statistics.mean(cpu), max(cpu)
    result.idle_rss_mean_mb, result.idle_rss_max_mb = statistics.mean(rss), max(rss)


def _report_hole(
    kind: AgentKind,
    tb: Testbed,
    missing: list[str],
    procs: dict[str, Proc],
    args: argparse.Namespace,
) -> None:
    names = {h.name for h in tb}
    for host in tb:
        if host.name not in missing:
            continue
        proc = procs[host.name]
        try:
            view = kind.members(host)
            lacks = [
                f"{n} ({view.get(n, 'unknown')})" for n in sorted(names) if view.get(n) != "alive"
            ]
            what = f"lacks {', '.join(lacks[:8])}{' ...' if len(lacks) > 8 else ''}"
        except AgentNotAnswering:
            what = f"not answering (process rc={proc.returncode})"
        print(f"      hole after {args.hole_limit:.0f}s: {host.name} {what}", flush=True)
        tail = proc.log().strip().splitlines()[-2:]
        if proc.returncode is not None and tail:
            print(f"        log: {' | '.join(line.strip() for line in tail)}", flush=True)


def _run_dir(args: argparse.Namespace, name: str, n: int) -> Path | None:
    if args.keep_logs is None:
        return None
    base = Path(args.keep_logs)
    for i in range(1000):
        path = base / f"{name}-n{n}-r{i}"
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise SystemExit(f"too many runs under {base}")


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def print_table(results: list[SizeResult], args: argparse.Namespace) -> None:
    print()
    header = (
        f"{'agent':<7} {'N':>3} {'runs':>4}  {'join s: median [min-max]':<26} "
        f"{'join/logs s: median [min-max]':<29} {'all up s':>8} "
        f"{'join-up':>7} {'floor j/all':>11} "
        f"{'holes':>5}  {'failure s: median [min-max]':<28} {'idle CPU %':>14} "
        f"{'RSS MB':>11} {'poll res. j/f':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        joins = [x.join for x in r.runs if x.join is not None]
        log_joins = [x.join_logs for x in r.runs if x.join_logs is not None]
        ups = [x.all_up for x in r.runs if x.all_up is not None]
        after_up = [
            x.join - x.all_up for x in r.runs if x.join is not None and x.all_up is not None
        ]
        floors_j = [x.floor_join for x in r.runs if x.floor_join is not None]
        floors_a = [x.floor_all for x in r.runs if x.floor_all is not None]
        floor = (
            f"{statistics.median(floors_j):.2f}/{statistics.median(floors_a):.2f}"
            if floors_j and floors_a
            else "-"
        )
        join_up = f"{statistics.median(after_up):.2f}" if after_up else "-"
        fails = [x.failure for x in r.runs if x.failure is not None]
        holes = sum(1 for x in r.runs if x.join is None)
        res_join = max((x.join_resolution for x in r.runs), default=0.0)
        res_fail = max((x.failure_resolution for x in r.runs), default=0.0)
        idle = (
            f"{r.idle_cpu_mean:.2f} (max {r.idle_cpu_max:.1f})"
            if r.idle_cpu_mean is not None and r.idle_cpu_max is not None
            else "-"
        )
        rss = (
            f"{r.idle_rss_mean_mb:.1f} ({r.idle_rss_max_mb:.0f})"
            if r.idle_rss_mean_mb is not None and r.idle_rss_max_mb is not None
            else "-"
        )
        print(
            f"{r.agent:<7} {r.n:>3} {len(r.runs):>4}  {_stats(joins):<26} "
            f"{_stats(log_joins):<29} "
            f"{max(ups) if ups else float('nan'):>8.2f} {join_up:>7} {floor:>11} "
            f"{holes:>2}/{len(r.runs):<2}  "
            f"{_stats(fails):<28} {idle:>14} {rss:>11} {res_join:>6.2f}/{res_fail:.2f}"
        )
    for r in results:
        open_runs = [x for x in r.runs if x.join is None]
        if open_runs:
            detail = ", ".join(
                f"{x.hole_closed:.0f}s" if x.hole_closed is not None else "never" for x in open_runs
            )
            print(f"holes, {r.agent} N={r.n}: {len(open_runs)}, closed at: {detail}")
    print(
        "\nSerf when the issue was written (LAN), N = 10/30/60: join "
        + " / ".join(f"{v}" for v in SERF_JOIN.values())
        + " s, failure "
        + " / ".join(f"{v}" for v in SERF_FAILURE.values())
        + " s; 2 of 10 mass joins at 60 left a hole; idle 0.3 % of a core, 15 MB."
    )
    print(
        "join/logs: the join read from the agents' logs (tailed every 20 ms), not their APIs. "
        "join-up: median of join minus all up (the join as seen once every agent answered). "
        "floor j/all: median start-up floor, the join's imports / all of a running agent's "
        "(sdmesh; see the module docstring).\n"
        f"idle CPU: % of one core per agent, mean (busiest) over {args.idle_seconds:.0f} s "
        f"after {args.settle:.0f} s settling; RSS: mean (max) MB. all up: max over runs. "
        f"poll res. j/f: worst gap between two polls of one agent while waiting for the "
        f"join / the failure, over all runs (poll interval "
        f"{args.interval:.3f} s)."
    )


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def describe_machine(agents: list[str]) -> str:
    lines = [
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Linux {platform.release()}"
    ]
    if "serf" in agents:
        version = subprocess.run(["serf", "version"], capture_output=True, text=True).stdout
        package = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "serf"], capture_output=True, text=True
        ).stdout
        lines.append(
            f"serf: Debian package {package or '?'} (binary says "
            f"{version.splitlines()[0] if version else '?'})"
        )
    return "\n".join(lines)


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
    ap.add_argument("--agent", default="serf", help="serf, sdmesh, or both: serf,sdmesh")
    ap.add_argument("--sizes", default="10,30,60", help="comma-separated N (default 10,30,60)")
    ap.add_argument("--join-runs", type=int, default=3, help="joins per N (default 3)")
    ap.add_argument(
        "--mass-joins", type=int, default=10, help="joins at the largest N (default 10)"
    )
    ap.add_argument("--hole-limit", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument(
        "--hole-follow",
        type=float,
        default=0.0,
        help="after a hole, keep polling this long to see when it closes (default 0: no)",
    )
    ap.add_argument("--failure-timeout", type=float, default=90.0, help="seconds (default 90)")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="default 30")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before idle (default 5)")
    ap.add_argument("--interval", type=float, default=0.05, help="poll interval (default 0.05)")
    ap.add_argument("--profile", default="lan", help="Serf timing profile (default lan)")
    ap.add_argument("--log-level", default="info", help="Serf log level (default info)")
    ap.add_argument("--keep-logs", metavar="DIR", help="keep every agent's log under DIR")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument(
        "--floor-runs",
        type=int,
        default=1,
        help="sdmesh runs per N that first measure the start-up floor (default 1; 0: none)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="1 join per N, 3 at the largest, 10 s idle"
    )
    args = ap.parse_args()
    if args.quick:
        args.join_runs, args.mass_joins, args.idle_seconds = 1, 3, 10.0
    agents = [a.strip() for a in args.agent.split(",") if a.strip()]
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    reason = skip_reason()
    if reason:
        print(f"mesh_join_failure: cannot run: {reason}", file=sys.stderr)
        return 1
    # SIGTERM (e.g. a timeout wrapper) acts as Ctrl-C: testbeds torn down, figures printed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    for name in agents:
        with Testbed(1) as probe:
            why = make_kind(name, probe, args).unavailable()
        if why:
            print(f"mesh_join_failure: {name}: {why}", file=sys.stderr)
            return 1
    print(describe_machine(agents))
    print(f"sdmesh: {compile_sdmesh()} (byte-compiled, as installed)")
    args.imports = agent_imports() if "sdmesh" in agents and args.floor_runs > 0 else []
    if args.imports:
        print(
            f"start-up floor imports: join {', '.join(JOIN_IMPORTS)}; all: {len(args.imports)} "
            "top-level imports of a running agent",
            flush=True,
        )
    print(
        f"sizes {sizes}, {args.join_runs} join(s) per N, {args.mass_joins} at N = {sizes[-1]}, "
        f"hole limit {args.hole_limit:.0f} s, poll every {args.interval} s",
        flush=True,
    )
    results: list[SizeResult] = []
    poller_start = resource.getrusage(resource.RUSAGE_SELF)
    wall_start = time.monotonic()
    busy_start, total_start = _cpu_ticks()
    load_start = os.getloadavg()[0]
    try:
        for n in sizes:
            runs = args.mass_joins if n == sizes[-1] else args.join_runs
            for name in agents:
                result = SizeResult(name, n)
                results.append(result)
                for i in range(runs):
                    run = one_run(name, n, args, result, i)
                    result.runs.append(run)
                    print(
                        f"  {name} N={n} run {i + 1}/{runs}: join "
                        f"{_fmt(run.join, 'HOLE')} (logs {_fmt(run.join_logs)}, all up "
                        f"{_fmt(run.all_up)}, spawned in "
                        f"{run.spawn:.2f}s), failure {_fmt(run.failure)}, poll res. "
                        f"{run.join_resolution:.2f}/{run.failure_resolution:.2f}s"
                        + (
                            f", floor {_fmt(run.floor_join)}/{_fmt(run.floor_all)}"
                            if run.floor_join is not None or run.floor_all is not None
                            else ""
                        )
                        + (f", exited: {run.exited}" if run.exited else ""),
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted: figures so far", file=sys.stderr)
    except NetnsError as error:
        print(f"mesh_join_failure: {error}", file=sys.stderr)
        return 1
    used = resource.getrusage(resource.RUSAGE_SELF)
    poller = used.ru_utime + used.ru_stime - poller_start.ru_utime - poller_start.ru_stime
    print_table(results, args)
    wall = time.monotonic() - wall_start
    busy, total = _cpu_ticks()
    print(
        f"this process (poller and harness) used {poller:.1f} s CPU over {wall:.0f} s "
        f"({100 * poller / wall:.1f} % of one core); the machine was "
        f"{100 * (busy - busy_start) / max(1, total - total_start):.0f} % busy overall "
        f"(everything, agents included; load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end)."
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": [asdict(r) for r in results], "args": vars(args)}, indent=2)
        )
    return 0


def _fmt(value: float | None, none: str = "-") -> str:
    return none if value is None else f"{value:.2f}s"


if __name__ == "__main__":
    sys.exit(main())
