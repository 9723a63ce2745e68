"""False positives under packet loss, on real processes: Serf and sdmesh alike.

Run (root): .venv/bin/python bench/mesh_soak.py [--agent serf,sdmesh] [--minutes 10]
            [--loss 10] [--n 10]

For each agent kind in turn (same machine, same run): N agents, each a process in its own
network namespace (sdmesh.testing.netns), join through the first one; once every view has
everyone alive, every host drops --loss % of the frames it sends (nft on the bridge, so each
datagram and TCP segment is lost with that probability), and for --minutes every agent's view
is polled about every --interval s. Nobody is killed: every member is alive all along, so

  suspect   an observation of a live member as suspect (SWIM's normal doubt: a refutation
            follows; reported apart, it is not a failure verdict)
  dead/left an observation of a live member as dead (failed) or left: a FALSE POSITIVE
  missing   a live member absent from a view

counted as observations (view entries at one poll), episodes (an observer's view of a member
entering that state), and from each agent's own log (every transition it logged, so none is
missed between two polls). Serf's member list has no suspect state (memberlist's suspicion
shows in its log only). Then the loss is lifted and every view must be whole again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdmesh.testing.agents import (
    AgentKind,
    AgentNotAnswering,
    MemberState,
    SdmeshAgent,
    SerfAgent,
    View,
    all_alive,
    start_mesh,
    wait_views,
)
from sdmesh.testing.netns import Host, NetnsError, Proc, Testbed, skip_reason

BAD = (MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT, MemberState.UNKNOWN)


@dataclass
class SoakResult:
    agent: str
    n: int
    loss: float
    seconds: float = 0.0
    polls: int = 0
    """Rounds in which every agent was asked for its view."""
    observations: int = 0
    """View entries about live members other than the observer itself, summed over polls."""
    not_answering: int = 0
    states: dict[str, int] = field(default_factory=dict)
    """Observations by state (alive, suspect, dead, left, missing)."""
    episodes: dict[str, int] = field(default_factory=dict)
    """Entries of an observer's view of a member into each non-alive state."""
    log_transitions: dict[str, int] = field(default_factory=dict)
    """Transitions to suspect/dead/left the agents logged about live members."""
    false_positives: list[str] = field(default_factory=list)
    """Every dead/left episode: when, who saw whom."""
    exited: list[str] = field(default_factory=list)
    recovered: float | None = None
    """Seconds after the loss was lifted until every view had everyone alive again."""
    worst_poll_gap: float = 0.0


def make_kind(name: str, testbed: Testbed, args: argparse.Namespace) -> AgentKind:
    if name == "serf":
        return SerfAgent(testbed, profile=args.profile, log_level="info")
    if name == "sdmesh":
        return SdmeshAgent(testbed)
    raise SystemExit(f"mesh_soak: unknown agent {name!r} (serf, sdmesh)")


# Transitions as each agent logs them. sdmesh: "member h3 (10.77.0.4:7946) alive -> suspect".
# Serf (memberlist + serf): "memberlist: Suspect h3 has failed, no acks received",
# "serf: EventMemberFailed: h3 10.77.0.4", "serf: EventMemberLeave: h3 10.77.0.4".
_SDMESH_LOG = re.compile(r"member (\S+) \([^)]*\) \w+ -> (suspect|dead|left)")
_SERF_LOG = [
    (re.compile(r"memberlist: Suspect (\S+) has failed"), "suspect"),
    (re.compile(r"EventMemberFailed: (\S+)"), "dead"),
    (re.compile(r"EventMemberLeave: (\S+)"), "left"),
    # memberlist's last resort before suspecting: a ping over TCP, which loss only delays.
    (re.compile(r"Was able to connect to (\S+) but other probes failed"), "tcp_rescue"),
]


def log_transitions(kind: str, procs: list[Proc], live: set[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for proc in procs:
        for line in proc.log().splitlines():
            if kind == "sdmesh":
                m = _SDMESH_LOG.search(line)
                if m and m.group(1) in live:
                    counts[m.group(2)] += 1
            else:
                for pattern, state in _SERF_LOG:
                    m = pattern.search(line)
                    if m and m.group(1) in live:
                        counts[state] += 1
    return counts


def soak(name: str, args: argparse.Namespace) -> SoakResult:
    result = SoakResult(name, args.n, args.loss)
    with Testbed(args.n, workdir=_run_dir(args, name), keep_logs=args.keep_logs is not None) as tb:
        kind = make_kind(name, tb, args)
        try:
            procs = start_mesh(kind, tb.hosts, ready_timeout=60)
            names = [h.name for h in tb]
            joined = wait_views(kind, tb.hosts, all_alive(names), timeout=120, interval=0.2)
            if not joined.complete:
                raise SystemExit(f"mesh_soak: {name}: the mesh never formed: {joined.missing}")
            time.sleep(args.settle)
            # Count log lines from here on only: the join itself may log transitions.
            before = log_transitions(name, procs, set(names))
            for host in tb:
                tb.loss(host, args.loss)
            print(
                f"  {name}: {args.n} agents joined; {args.loss:g} % loss on every host for "
                f"{args.minutes:g} min",
                flush=True,
            )
            _poll(kind, tb.hosts, names, args, result)
            tb.clear_faults()
            after = log_transitions(name, procs, set(names))
            result.log_transitions = {s: after[s] - before[s] for s in after}
            result.exited = [p.host.name for p in procs if not p.alive()]
            t = time.monotonic()
            healed = wait_views(kind, tb.hosts, all_alive(names), timeout=60, interval=0.2)
            result.recovered = time.monotonic() - t if healed.complete else None
        finally:
            kind.close()
    return result


def _poll(
    kind: AgentKind, hosts: list[Host], names: list[str], args: argparse.Namespace, r: SoakResult
) -> None:
    states: Counter[str] = Counter()
    episodes: Counter[str] = Counter()
    last: dict[tuple[str, str], str] = {}
    start = time.monotonic()
    end = start + args.minutes * 60
    last_report = start

    def ask(host: Host) -> View | None:
        try:
            return kind.members(host)
        except AgentNotAnswering:
            return None

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        previous = start
        while (now := time.monotonic()) < end:
            r.worst_poll_gap = max(r.worst_poll_gap, now - previous)
            previous = now
            views = list(pool.map(ask, hosts))
            r.polls += 1
            when = time.monotonic() - start
            for host, view in zip(hosts, views, strict=True):
                if view is None:
                    r.not_answering += 1
                    continue
                for member in names:
                    if member == host.name:
                        continue
                    state = view.get(member, MemberState.UNKNOWN)
                    label = "missing" if state == MemberState.UNKNOWN else state.value
                    states[label] += 1
                    r.observations += 1
                    key = (host.name, member)
                    if label != "alive" and last.get(key) != label:
                        episodes[label] += 1
                        if label in ("dead", "left"):
                            r.false_positives.append(
                                f"{when:7.1f}s {host.name} saw {member} {label}"
                            )
                            print(f"    FALSE POSITIVE {r.false_positives[-1]}", flush=True)
                    last[key] = label
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                print(
                    f"    {when / 60:4.1f} min: {r.polls} polls, suspect episodes "
                    f"{episodes['suspect']}, dead/left episodes "
                    f"{episodes['dead'] + episodes['left']}",
                    flush=True,
                )
            time.sleep(max(0.0, args.interval - (time.monotonic() - now)))
    r.seconds = time.monotonic() - start
    r.states = dict(states)
    r.episodes = dict(episodes)


def _run_dir(args: argparse.Namespace, name: str) -> Path | None:
    if args.keep_logs is None:
        return None
    base = Path(args.keep_logs)
    for i in range(1000):
        path = base / f"{name}-soak-r{i}"
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise SystemExit(f"too many runs under {base}")


def print_table(results: list[SoakResult]) -> None:
    print()
    header = (
        f"{'agent':<7} {'N':>3} {'loss':>5} {'min':>5} {'polls':>6} {'observ.':>8}  "
        f"{'suspect obs (ratio)':<20} {'susp. ep.':>9}  {'dead/left obs (ratio)':<22} "
        f"{'FP ep.':>6}  {'log: susp/dead/left':<20} {'no ans.':>7} {'recov. s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        obs = max(1, r.observations)
        suspect = r.states.get("suspect", 0)
        bad = r.states.get("dead", 0) + r.states.get("left", 0)
        fp = r.episodes.get("dead", 0) + r.episodes.get("left", 0)
        logs = "/".join(str(r.log_transitions.get(s, 0)) for s in ("suspect", "dead", "left"))
        print(
            f"{r.agent:<7} {r.n:>3} {r.loss:>4g}% {r.seconds / 60:>5.1f} {r.polls:>6} "
            f"{r.observations:>8}  {suspect:>6} ({suspect / obs:.1e}){'':<5} "
            f"{r.episodes.get('suspect', 0):>9}  {bad:>6} ({bad / obs:.1e}){'':<7} {fp:>6}  "
            f"{logs:<20} {r.not_answering:>7} "
            f"{r.recovered if r.recovered is not None else float('nan'):>8.1f}"
        )
    for r in results:
        rescued = r.log_transitions.get("tcp_rescue", 0)
        if rescued:
            print(f"{r.agent}: {rescued} failed UDP probes rescued by memberlist's TCP ping")
        missing = r.states.get("missing", 0)
        if missing or r.exited:
            print(f"{r.agent}: {missing} observations with a member missing; exited: {r.exited}")
    print(
        "\nobservations: view entries about the other (live) members, over all polls; ratio = "
        "that state's share of them. ep.: an observer's view of a member entering the state "
        "(FP = dead or left: false positives). log: transitions the agents logged about live "
        "members during the loss (Serf: memberlist suspicions, EventMemberFailed/Leave). "
        "recov.: seconds after the loss was lifted until every view was whole again."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agent", default="sdmesh", help="serf, sdmesh, or both: serf,sdmesh")
    ap.add_argument("--n", type=int, default=10, help="agents (default 10)")
    ap.add_argument("--minutes", type=float, default=10.0, help="under loss (default 10)")
    ap.add_argument("--loss", type=float, default=10.0, help="percent, every host (default 10)")
    ap.add_argument("--interval", type=float, default=0.5, help="poll interval (default 0.5)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the join (5)")
    ap.add_argument("--profile", default="lan", help="Serf timing profile (default lan)")
    ap.add_argument("--keep-logs", metavar="DIR", help="keep every agent's log under DIR")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    agents = [a.strip() for a in args.agent.split(",") if a.strip()]
    reason = skip_reason()
    if reason:
        print(f"mesh_soak: cannot run: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    for name in agents:
        with Testbed(1) as probe:
            why = make_kind(name, probe, args).unavailable()
        if why:
            print(f"mesh_soak: {name}: {why}", file=sys.stderr)
            return 1
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.n} agents, {args.loss:g} % loss, {args.minutes:g} min, poll every "
        f"{args.interval} s",
        flush=True,
    )
    results: list[SoakResult] = []
    try:
        for name in agents:
            results.append(soak(name, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except NetnsError as error:
        print(f"mesh_soak: {error}", file=sys.stderr)
        return 1
    print_table(results)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": [asdict(r) for r in results], "args": vars(args)}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
