"""Randomized fault testing: the seeded schedule and the invariant checker, as pure code.

Why pure: a nemesis run is only useful when a failure can be replayed, so the schedule is a
function of the seed alone, and the checker is fed samples (what every agent's API said at an
instant) and ``now``, so its verdicts are testable without a single namespace. The executor
that applies faults to network-namespace agents and feeds the checker is
``sdmesh.testing.nemesis_run``.

Invariants (issue 14, item 7):

(a) no (pool, component) VM runs on two hosts at any instant: every overlap episode is kept
    with its hosts, start, end and whether a host of it was cut off when it began;
(b) after each heal, every pool runs every VM exactly once within a deadline (the time to
    converge is measured per round);
(c) terminate leaves nothing: no domain, no volume;
(d) all agents agree on state, shepherd and generation after the heal.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    KILL_RESTART = "kill-9+restart"
    CUT_HOST = "cut-host"
    CUT_SHEPHERD = "cut-shepherd"
    LOSS = "packet-loss"
    LEAVE_REJOIN = "leave+rejoin"


CUTS = (FaultKind.CUT_HOST, FaultKind.CUT_SHEPHERD)


@dataclass(frozen=True)
class Fault:
    """One round's fault: what, on which host (or whose pool's shepherd), for how long."""

    kind: FaultKind
    host: int  # index into the members (ignored for CUT_SHEPHERD)
    pool: int  # index into the pools (CUT_SHEPHERD: whose shepherd is cut off)
    hold: float  # seconds between the fault and its heal
    loss_percent: float = 0.0

    def describe(self, host: str, pools: Sequence[str]) -> str:
        """What happened, naming the host it fell on (chosen when applied)."""
        if self.kind is FaultKind.CUT_SHEPHERD:
            return f"{self.kind} {host} of {pools[self.pool % len(pools)]} for {self.hold:.0f}s"
        extra = f" {self.loss_percent:.0f}%" if self.kind is FaultKind.LOSS else ""
        return f"{self.kind}{extra} {host} for {self.hold:.0f}s"


def schedule(
    seed: int,
    rounds: int,
    hosts: int,
    pools: int,
    *,
    kinds: Sequence[FaultKind] = tuple(FaultKind),
    hold: tuple[float, float] = (8.0, 14.0),
) -> list[Fault]:
    """The faults of a run, from the seed alone (same seed, same faults, anywhere). The first
    rounds go through ``kinds`` in a seeded order so a short run sees each kind once."""
    if hosts < 1 or pools < 1 or not kinds:
        raise ValueError("a schedule needs hosts, pools and fault kinds")
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    faults = []
    for n in range(rounds):
        kind = order[n] if n < len(order) else rng.choice(order)
        faults.append(
            Fault(
                kind=kind,
                host=rng.randrange(hosts),
                pool=rng.randrange(pools),
                hold=round(rng.uniform(*hold), 1),
                loss_percent=float(rng.choice((20, 30, 40))) if kind is FaultKind.LOSS else 0.0,
            )
        )
    return faults


# --- (a) overlaps ------------------------------------------------------------------------------


@dataclass
class Overlap:
    """A domain seen on several hosts at once, from ``start`` to ``end`` (None: still on)."""

    domain: str
    hosts: set[str]
    start: float
    end: float | None = None
    during_cut: bool = False
    round: int = -1

    @property
    def pool(self) -> str:
        return pool_of(self.domain)

    def duration(self, now: float) -> float:
        return (self.end if self.end is not None else now) - self.start

    def describe(self, origin: float = 0.0) -> str:
        end = "still on" if self.end is None else f"{self.end - origin:.1f}s"
        why = " (a host cut off)" if self.during_cut else ""
        return (
            f"round {self.round}: {self.domain} of pool {self.pool} on {sorted(self.hosts)} "
            f"from {self.start - origin:.1f}s to {end}{why}"
        )


def pool_of(domain: str) -> str:
    """``sdm-<pool>-<component...>`` -> pool (pool ids carry no dash in these runs)."""
    parts = domain.split("-")
    return parts[1] if len(parts) > 2 and parts[0] == "sdm" else ""


@dataclass
class OverlapTracker:
    """Fed one look at every host's domains per instant; keeps every overlap episode."""

    episodes: list[Overlap] = field(default_factory=list)
    _open: dict[str, Overlap] = field(default_factory=dict)
    samples: int = 0

    def observe(
        self,
        now: float,
        domains: Mapping[str, Sequence[str]],
        cut: set[str] = frozenset(),  # type: ignore[assignment]
        round_: int = -1,
    ) -> None:
        self.samples += 1
        where: dict[str, set[str]] = {}
        for host, names in domains.items():
            for name in names:
                where.setdefault(name, set()).add(host)
        for name, hosts in where.items():
            if len(hosts) < 2:
                continue
            episode = self._open.get(name)
            if episode is None:
                episode = Overlap(name, set(hosts), now, during_cut=bool(hosts & cut))
                episode.round = round_
                self._open[name] = episode
                self.episodes.append(episode)
            else:
                episode.hosts |= hosts
        for name in [n for n in self._open if len(where.get(n, ())) < 2]:
            self._open.pop(name).end = now

    def close(self, now: float) -> None:
        for episode in self._open.values():
            episode.end = now
        self._open.clear()


# --- (b), (d) convergence and agreement --------------------------------------------------------


def convergence_problems(
    expected: Mapping[str, int],
    statuses: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
    domains: Mapping[str, Sequence[str]],
) -> list[str]:
    """What keeps the mesh from the converged state; [] when converged.

    ``expected``: pool -> VM count; ``statuses``: agent -> pool -> its ``/v1/pools/<pool>``
    (None when it did not answer); ``domains``: agent -> domains it runs. Converged means
    every pool running, every VM on exactly one host, the one its status names, and every
    agent agreeing on state, shepherd and generation.
    """
    problems: list[str] = []
    seen: Counter[str] = Counter(d for names in domains.values() for d in names)
    for pool, count in sorted(expected.items()):
        views = {agent: by_pool.get(pool) for agent, by_pool in statuses.items()}
        silent = sorted(agent for agent, view in views.items() if view is None)
        if silent:
            problems.append(f"{pool}: no status from {silent}")
        answers = {agent: view for agent, view in views.items() if view is not None}
        keys = {
            agent: (view.get("state"), view.get("shepherd"), view.get("generation"))
            for agent, view in answers.items()
        }
        if len(set(keys.values())) > 1:
            problems.append(f"{pool}: agents disagree (state, shepherd, generation): {keys}")
        mine = {d: n for d, n in seen.items() if pool_of(d) == pool}
        twice = {d: n for d, n in mine.items() if n > 1}
        if twice:
            problems.append(f"{pool}: VMs on several hosts: {twice}")
        if len(mine) != count:
            problems.append(f"{pool}: {len(mine)} of {count} VMs run")
        for agent, view in answers.items():
            if view.get("state") != "running":
                problems.append(f"{pool}: {agent} says {view.get('state')}")
                continue
            for component in view.get("components", []):
                domain, host = component.get("domain"), component.get("host")
                if domain and domain not in domains.get(str(host), ()):
                    problems.append(f"{pool}: {agent} says {domain} on {host}, it is not there")
            break  # one running view checked against the domains suffices (they agree)
    return problems


@dataclass
class RoundResult:
    """One round: its fault and what the checker measured."""

    number: int
    fault: str
    kind: FaultKind
    converge_s: float | None = None  # from the heal to converged; None: missed the deadline
    problems: list[str] = field(default_factory=list)  # at the deadline, when missed
    overlaps: list[Overlap] = field(default_factory=list)

    def row(self) -> str:
        took = f"{self.converge_s:6.1f}" if self.converge_s is not None else "  MISS"
        cut = sum(1 for o in self.overlaps if o.during_cut)
        other = len(self.overlaps) - cut
        worst = max((o.duration(o.start) for o in self.overlaps), default=0.0)
        return f"{self.number:>5}  {self.fault:<36} {took}  {cut:>9} {other:>7}  {worst:8.1f}"


TABLE_HEADER = (
    f"{'round':>5}  {'fault':<36} {'conv s':>6}  {'ovl(cut)':>9} {'ovl':>7}  {'worst s':>8}"
)


@dataclass
class RunResult:
    """A whole run: the seed, each round, every overlap, and what terminate left."""

    seed: int
    rounds: list[RoundResult] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # after terminate: domains, volumes
    samples: int = 0
    origin: float = 0.0

    def cut_overlaps(self) -> list[Overlap]:
        return [o for o in self.overlaps if o.during_cut]

    def other_overlaps(self) -> list[Overlap]:
        return [o for o in self.overlaps if not o.during_cut]

    def missed(self) -> list[RoundResult]:
        return [r for r in self.rounds if r.converge_s is None]

    def table(self) -> str:
        return "\n".join([TABLE_HEADER, *(r.row() for r in self.rounds)])

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}, {len(self.rounds)} rounds, {self.samples} samples",
            self.table(),
        ]
        lines += [o.describe(self.origin) for o in self.overlaps]
        for r in self.missed():
            lines.append(f"round {r.number} never converged: " + "; ".join(r.problems[:8]))
        lines += [f"left after terminate: {item}" for item in self.leftovers]
        return "\n".join(lines)
