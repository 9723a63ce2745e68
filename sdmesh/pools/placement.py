"""Placement: which host each VM of a pool goes to. Pure: members and demands in, a plan out.

The shepherd computes a plan from gossiped capacity (issue 5); each host then admits or
refuses against its real capacity, and refusals lead to re-placement with that host excluded.
Policies, from the SmartDomains slides' ``Scheduler``:

* ``spread`` — the host with the fewest of this pool's VMs so far, then the largest share of
  its memory still free after the VM (a pool's VMs go to as many hosts as they can, and
  hosts fill in proportion to their size, not their absolute free memory);
* ``pack`` — the host with the least free memory that still fits (frees whole hosts);
* ``round-robin`` — the Scheduler's ``hosts`` in turn, skipping hosts that do not fit.

Constraints, checked for every policy: a pinned host (``sfProcessHost``), required labels,
anti-affinity groups (VMs of one group never share a host), memory, vCPUs and free disk. Memory
and disk are never overcommitted; vCPUs may be, up to ``vcpu_ratio`` per host CPU (hypervisors
share CPUs routinely; 4 is a common cloud default). Disk is checked only where the member says
how much it has free (``disk_free_mib``; older agents do not): the figure is gossiped coarsely
(see sdmesh.agent.meta), so the backend creating the disk stays the last word. A VM that fits
nowhere is reported, never squeezed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Policy = Literal["spread", "pack", "round-robin"]
POLICIES: tuple[Policy, ...] = ("spread", "pack", "round-robin")


@dataclass(frozen=True)
class HostOffer:
    """What a live member advertises (from its gossiped metadata)."""

    name: str
    vcpus: int
    memory_mib: int
    memory_free_mib: int
    labels: frozenset[str] = frozenset()
    disk_free_mib: int | None = None  # None: the member did not say (no disk check there)
    shell: bool = False  # the member allows shell components (its allow-shell; deny by default)
    witness: bool = False  # a witness (sdmesh join --witness) votes but never hosts a VM


@dataclass(frozen=True)
class Demand:
    """One VM to place, in descriptor order (placement is deterministic for a descriptor)."""

    path: str
    vcpus: int
    memory_mib: int
    labels: frozenset[str] = frozenset()
    anti_affinity: str | None = None
    pinned: str | None = None  # sfProcessHost
    hosts: tuple[str, ...] = ()  # a Scheduler's host list; empty: any live member
    policy: Policy = "spread"
    disk_mib: int = 0  # file-backed disks' declared sizes (sdmesh.pools.layout)
    shell: bool = False  # the unit holds a shell component: only hosts with allow-shell


@dataclass(frozen=True)
class Unplaced:
    path: str
    reason: str


@dataclass
class Plan:
    assignments: dict[str, str] = field(default_factory=dict)  # component path -> host
    unplaced: list[Unplaced] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unplaced


@dataclass
class _HostState:
    offer: HostOffer
    free_memory: int
    free_vcpus: int
    free_disk: int | None = None  # None: unknown, not checked
    groups: set[str] = field(default_factory=set)
    placed: int = 0


DEFAULT_VCPU_RATIO = 4.0
NO_SHELL = "does not allow shell components (allow-shell)"
NO_SHELL_ANYWHERE = (
    "no host allows shell components (set allow-shell = true in the configuration of the "
    "hosts that may run them)"
)


def shell_host(offers: Iterable[HostOffer], preferred: str) -> str | None:
    """Where a pool's shell leaves (which belong to no VM) may run: ``preferred`` (the
    shepherd) if it allows shell, else the first member by name that does, else None
    (refuse the pool with NO_SHELL_ANYWHERE)."""
    allowing = sorted(offer.name for offer in offers if offer.shell)
    if preferred in allowing:
        return preferred
    return allowing[0] if allowing else None


def place(
    demands: Sequence[Demand],
    offers: Iterable[HostOffer],
    *,
    exclude: Iterable[str] = (),
    already: dict[str, str] | None = None,
    vcpu_ratio: float = DEFAULT_VCPU_RATIO,
) -> Plan:
    """Place ``demands`` on ``offers``; ``exclude`` hosts that refused; keep ``already``
    placed VMs where they are (their resources are taken out of the offers first)."""
    excluded = set(exclude)
    hosts = {
        offer.name: _HostState(
            offer, offer.memory_free_mib, int(offer.vcpus * vcpu_ratio), offer.disk_free_mib
        )
        for offer in sorted(offers, key=lambda o: o.name)
        if offer.name not in excluded and not offer.witness
    }
    plan = Plan()
    placed = dict(already or {})
    by_path = {demand.path: demand for demand in demands}
    for path, where in placed.items():
        state = hosts.get(where)
        known = by_path.get(path)
        if state is not None and known is not None:
            _take(state, known)
            plan.assignments[path] = where
    cursors: dict[tuple[str, ...], int] = {}
    for demand in demands:
        if demand.path in plan.assignments:
            continue
        chosen, reason = _choose(demand, hosts, cursors)
        if chosen is None:
            plan.unplaced.append(Unplaced(demand.path, reason))
            continue
        _take(hosts[chosen], demand)
        plan.assignments[demand.path] = chosen
    return plan


def _take(state: _HostState, demand: Demand) -> None:
    state.free_memory -= demand.memory_mib
    state.free_vcpus -= demand.vcpus
    if state.free_disk is not None:
        state.free_disk -= demand.disk_mib
    state.placed += 1
    if demand.anti_affinity:
        state.groups.add(demand.anti_affinity)


def _fits(state: _HostState, demand: Demand) -> str | None:
    """Why ``demand`` cannot go to this host, or None when it fits."""
    if demand.shell and not state.offer.shell:
        return NO_SHELL
    if not demand.labels <= state.offer.labels:
        missing = ", ".join(sorted(demand.labels - state.offer.labels))
        return f"lacks label(s) {missing}"
    if demand.anti_affinity and demand.anti_affinity in state.groups:
        return f"already runs a VM of anti-affinity group {demand.anti_affinity!r}"
    if demand.memory_mib > state.free_memory:
        return f"has {max(state.free_memory, 0)} MiB free, needs {demand.memory_mib}"
    if demand.vcpus > state.offer.vcpus:
        return f"has {state.offer.vcpus} CPUs, needs {demand.vcpus} vCPUs"
    if demand.vcpus > state.free_vcpus:
        return f"has {max(state.free_vcpus, 0)} vCPUs left to give, needs {demand.vcpus}"
    if demand.disk_mib > 0 and state.free_disk is not None and demand.disk_mib > state.free_disk:
        return f"needs {demand.disk_mib} MiB of disk, {max(state.free_disk, 0)} MiB free"
    return None


def _choose(
    demand: Demand, hosts: dict[str, _HostState], cursors: dict[tuple[str, ...], int]
) -> tuple[str | None, str]:
    if demand.pinned is not None:
        state = hosts.get(demand.pinned)
        if state is None:
            return None, f"sfProcessHost {demand.pinned!r} is not a live member that can take it"
        problem = _fits(state, demand)
        return (None, f"{demand.pinned} {problem}") if problem else (demand.pinned, "")
    names = list(demand.hosts) if demand.hosts else sorted(hosts)
    candidates = [name for name in names if name in hosts]
    if not candidates:
        wanted = ", ".join(demand.hosts) if demand.hosts else "any member"
        return None, f"no live member among {wanted}"
    problems: dict[str, str] = {}
    fitting = []
    for name in candidates:
        problem = _fits(hosts[name], demand)
        if problem:
            problems[name] = problem
        else:
            fitting.append(name)
    if not fitting and demand.shell and all(why == NO_SHELL for why in problems.values()):
        return None, NO_SHELL_ANYWHERE
    if not fitting:
        shown = "; ".join(f"{name} {why}" for name, why in sorted(problems.items())[:5])
        return None, f"fits on no host ({shown})"
    if demand.policy == "round-robin":
        key = tuple(candidates)
        start = cursors.get(key, 0)
        for offset in range(len(candidates)):
            name = candidates[(start + offset) % len(candidates)]
            if name in fitting:
                cursors[key] = (start + offset + 1) % len(candidates)
                return name, ""
    after = {name: hosts[name].free_memory - demand.memory_mib for name in fitting}
    if demand.policy == "pack":
        return min(fitting, key=lambda name: (after[name], name)), ""

    def spread_key(name: str) -> tuple[int, float, int]:
        total = max(hosts[name].offer.memory_mib, 1)
        return (-hosts[name].placed, after[name] / total, -fitting.index(name))

    return max(fitting, key=spread_key), ""
