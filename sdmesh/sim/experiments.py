"""Reusable scenarios: the measurements behind the tests and ``bench/membership_sim.py``.

Each function builds a fresh simulator from a seed, runs one scenario and returns plain
figures, so tests can bound them and the bench can print them.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field, replace

from sdmesh.membership import (
    Action,
    Member,
    MemberEvent,
    MemberEventKind,
    MembershipConfig,
    Meta,
    RumorLearned,
    State,
)
from sdmesh.sim.network import NetworkConfig
from sdmesh.sim.simulator import SimNode, Simulator


def node_name(index: int) -> str:
    return f"node-{index:04d}"


def host_meta(index: int) -> Meta:
    """Metadata shaped like a real agent's, so datagram budgets are realistic."""
    return {
        "capacity": {
            "vcpus": 64,
            "memory_mib": 262144,
            "vcpus_free": 64 - index % 17,
            "memory_free_mib": 262144 - 4096 * (index % 23),
        },
        "uri_type": "qemu",
        "labels": {"rack": f"r{index % 12:02d}", "zone": "a"},
        "images": ["debian-12", "alma-9"],
        "api": f"https://10.1.{index >> 8 & 255}.{index & 255}:8443",
    }


def preloaded_cluster(
    n: int,
    *,
    seed: int,
    config: MembershipConfig | None = None,
    network: NetworkConfig | None = None,
    wire: bool = False,
) -> Simulator:
    """``n`` nodes started together, each already knowing all others (a converged mesh)."""
    sim = Simulator(seed=seed, config=config, network=network, wire=wire)
    members = []
    for index in range(n):
        addr = (f"10.1.{index >> 8 & 255}.{index & 255}", 7946)
        members.append(Member(node_name(index), addr, 0, State.ALIVE, host_meta(index)))
    view = tuple(members)
    for member in members:
        sim.add_node(member.name, meta=member.meta, addr=member.addr, preload=view)
    return sim


def joined_cluster(
    n: int,
    *,
    seed: int,
    stagger: float = 0.02,
    config: MembershipConfig | None = None,
    network: NetworkConfig | None = None,
    wire: bool = False,
) -> Simulator:
    """Node 0 starts alone; every other node joins through it, ``stagger`` seconds apart."""
    sim = Simulator(seed=seed, config=config, network=network, wire=wire)
    seed_node = sim.add_node(node_name(0), meta=host_meta(0))
    for index in range(1, n):
        sim.run_until(index * stagger)
        sim.add_node(node_name(index), meta=host_meta(index), join=[seed_node.addr])
    return sim


def view_holes(sim: Simulator) -> int:
    """Pairs of running nodes where one does not see the other alive."""
    running = sim.running_nodes()
    holes = 0
    for observer in running:
        state_of = observer.core.state_of
        for other in running:
            if other is not observer and state_of(other.name) is not State.ALIVE:
                holes += 1
    return holes


@dataclass
class _EventLog:
    """First suspicion per member, and who has declared whom failed (and when)."""

    first_suspected: dict[str, float] = field(default_factory=dict)
    failed_by: dict[str, dict[str, float]] = field(default_factory=dict)
    updated_by: dict[str, dict[str, float]] = field(default_factory=dict)
    suspicions: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, at: float, node: SimNode, action: Action) -> None:
        if not isinstance(action, MemberEvent):
            return
        subject = action.member.name
        if action.kind is MemberEventKind.SUSPECTED:
            self.suspicions += 1
            self.first_suspected.setdefault(subject, at)
        elif action.kind is MemberEventKind.FAILED:
            self.failures.append((node.name, subject))
            self.failed_by.setdefault(subject, {}).setdefault(node.name, at)
        elif action.kind is MemberEventKind.UPDATED:
            self.updated_by.setdefault(subject, {})[node.name] = at


def first_detection_periods(
    n: int, *, trials: int, seed: int, batch: int = 0, spacing_periods: int = 8
) -> list[int]:
    """SWIM's first-detection experiment: in how many protocol periods does *some* member
    first notice a crash?

    Periods are aligned across members (SWIM's model), crashes happen just before a period
    boundary, and detection is counted at the end of the period whose probe failed. Expected
    value ``1 / (1 - (1 - 1/(n-1))^(n-1))``, about ``e/(e-1) = 1.58`` for any n.

    ``batch`` members crash together at each boundary (default: 1 per 100 members). They
    share dissemination traffic, which makes large meshes affordable, and bias the figure
    negligibly: each victim stays unprobed in a period with probability
    ``(1 - 1/(n-1))^(n-batch)`` instead of ``(1 - 1/(n-1))^(n-1)``.
    """
    config = MembershipConfig(randomize_probe_phase=False)
    interval = config.probe_interval
    batch = batch or max(1, n // 100)
    sim = preloaded_cluster(n, seed=seed, config=config)
    log = _EventLog()
    sim.listeners.append(log)
    rng = random.Random(f"victims:{seed}")
    periods: list[int] = []
    boundary = 10 * interval
    for first in range(0, trials, batch):
        sim.run_until(boundary - interval / 10)
        victims = rng.sample(sorted(sim.nodes), min(batch, trials - first))
        for victim in victims:
            log.first_suspected.pop(victim, None)
            sim.crash(victim)
        # Let the victims stay down long enough to be noticed, then bring them back (on a
        # period boundary, keeping periods aligned) so that the mesh keeps its size.
        sim.run_until(boundary + (spacing_periods - 1) * interval)
        for victim in victims:
            detected = log.first_suspected.get(victim)
            if detected is not None:
                periods.append(round((detected - boundary) / interval))
            helper = rng.choice(sorted(node.name for node in sim.running_nodes()))
            sim.restart(victim, join=[sim.nodes[helper].addr])
        boundary += spacing_periods * interval
    return periods


@dataclass(frozen=True)
class DetectionTimes:
    """Seconds from crash to the first suspicion and to every member marking it failed."""

    first_suspicion: list[float]
    all_failed: list[float]


def full_detection_times(
    n: int,
    *,
    trials: int,
    seed: int,
    spacing: float = 20.0,
    config: MembershipConfig | None = None,
) -> DetectionTimes:
    """Crash a random member (random probe phases, as in real life), time the first suspicion
    and the moment every other member has marked it failed, then restart it and repeat."""
    config = config or MembershipConfig()
    sim = preloaded_cluster(n, seed=seed, config=config)
    log = _EventLog()
    sim.listeners.append(log)
    rng = random.Random(f"victims:{seed}")
    first: list[float] = []
    full: list[float] = []
    for trial in range(trials):
        start = 5.0 + trial * spacing
        sim.run_until(start + rng.uniform(0, config.probe_interval))
        victim = rng.choice(sorted(node.name for node in sim.running_nodes()))
        crashed_at = sim.now
        log.first_suspected.pop(victim, None)
        log.failed_by.pop(victim, None)
        sim.crash(victim)
        sim.run_until(start + spacing * 0.6)
        observers = {node.name for node in sim.running_nodes()}
        if victim in log.first_suspected:
            first.append(log.first_suspected[victim] - crashed_at)
        seen = log.failed_by.get(victim, {})
        if observers <= seen.keys():
            full.append(max(seen[name] for name in observers) - crashed_at)
        helper = sim.nodes[rng.choice(sorted(observers))]
        sim.restart(victim, join=[helper.addr])
    return DetectionTimes(first, full)


@dataclass(frozen=True)
class Dissemination:
    """Time for a metadata update to reach every member."""

    seconds: list[float]
    periods: list[float]
    """In probe periods (``probe_interval``)."""
    gossip_rounds: list[float]
    """In gossip rounds (``gossip_interval``)."""


def dissemination_times(
    n: int,
    *,
    trials: int,
    seed: int,
    spacing: float = 5.0,
    gossip: bool = True,
) -> Dissemination:
    """Announce new metadata on random members and time its arrival everywhere.

    With ``gossip`` off, updates travel only piggybacked on probes and acks (pure SWIM).
    """
    config = MembershipConfig() if gossip else MembershipConfig(gossip_nodes=0)
    sim = preloaded_cluster(n, seed=seed, config=config)
    log = _EventLog()
    sim.listeners.append(log)
    rng = random.Random(f"updaters:{seed}")
    updaters = rng.sample(sorted(sim.nodes), trials)
    started: dict[str, float] = {}
    for trial, name in enumerate(updaters):
        sim.run_until(5.0 + trial * spacing + rng.uniform(0, 1))
        meta = dict(sim.nodes[name].meta, vcpus_committed=trial + 1)
        sim.update_meta(name, meta)
        started[name] = sim.now
    sim.run_until(sim.now + max(spacing, 20.0))
    seconds = []
    for name, at in started.items():
        seen = log.updated_by.get(name, {})
        if len(seen) == n - 1:
            seconds.append(max(seen.values()) - at)
    return Dissemination(
        seconds,
        [s / config.probe_interval for s in seconds],
        [s / config.gossip_interval for s in seconds],
    )


@dataclass(frozen=True)
class RumorSpread:
    """Time for a published rumor to reach every running member."""

    seconds: list[float]
    periods: list[float]
    """In probe periods (``probe_interval``)."""
    missed: int
    """Rumors some running member had not learned when the run ended."""


def rumor_dissemination_times(
    n: int,
    *,
    trials: int,
    seed: int,
    loss: float = 0.0,
    spacing: float = 5.0,
    payload_bytes: int = 200,
) -> RumorSpread:
    """Publish rumors on random members of a converged mesh and time their arrival
    everywhere (by gossip, or push-pull should gossip miss someone)."""
    config = MembershipConfig()
    sim = preloaded_cluster(n, seed=seed, config=config, network=NetworkConfig(loss=loss))
    learned: dict[str, dict[str, float]] = {}

    def on_action(at: float, node: SimNode, action: Action) -> None:
        if isinstance(action, RumorLearned):
            learned.setdefault(action.rumor.key, {}).setdefault(node.name, at)

    sim.listeners.append(on_action)
    rng = random.Random(f"publishers:{seed}")
    publishers = [rng.choice(sorted(sim.nodes)) for _ in range(trials)]
    started: dict[str, float] = {}
    for trial, name in enumerate(publishers):
        sim.run_until(5.0 + trial * spacing + rng.uniform(0, 1))
        key = f"pool-{trial}"
        sim.publish(name, "pools", key, bytes(payload_bytes))
        started[key] = sim.now
    sim.run_until(sim.now + max(spacing, 20.0))
    seconds = []
    for key, at in started.items():
        seen = learned.get(key, {})
        if len(seen) == n:
            seconds.append(max(seen.values()) - at)
    return RumorSpread(seconds, [s / config.probe_interval for s in seconds], trials - len(seconds))


@dataclass(frozen=True)
class LossRun:
    """False failure detection under packet loss (every node stays up)."""

    false_failures: int
    """Failure verdicts (member events) about members that were up."""
    suspicions_raised: int
    """Suspicions started by a failed probe (each then spreads to every member)."""
    suspicion_events: int
    """Suspicion member events, summed over all observers."""
    refutations: int
    probes: int
    max_local_health: int


def false_positive_run(n: int, *, loss: float, duration: float, seed: int) -> LossRun:
    """Run a healthy mesh with uniform datagram ``loss`` and count wrong verdicts."""
    network = replace(NetworkConfig(), loss=loss)
    sim = preloaded_cluster(n, seed=seed, network=network)
    log = _EventLog()
    sim.listeners.append(log)
    max_health = 0
    step = 5.0
    while sim.now < duration:
        sim.run_until(min(duration, sim.now + step))
        max_health = max(max_health, max(node.core.local_health for node in sim.nodes.values()))
    cores = [node.core for node in sim.nodes.values()]
    return LossRun(
        false_failures=len(log.failures),
        suspicions_raised=sum(core.stats.suspicions_raised for core in cores),
        suspicion_events=log.suspicions,
        refutations=sum(core.stats.refutations for core in cores),
        probes=sum(core.stats.probes for core in cores),
        max_local_health=max_health,
    )


def mean(values: list[float] | list[int]) -> float:
    return statistics.fmean(values) if values else float("nan")
