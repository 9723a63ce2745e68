"""Finding and removing what a crash left behind.

Everything sdmesh creates carries its pool id, so leftovers are the domains and volumes of
pools that no longer exist. :func:`plan_reap` decides (pure: inputs in, decisions out);
:func:`reap` lists, decides and removes. A grace period protects resources of pools this
host has not heard of yet (a pool record still travelling through gossip) and creations
still in progress in another process; a known termination needs no grace.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sdmesh.hypervisor.driver import HypervisorDriver, ManagedDomain
from sdmesh.hypervisor.errors import HypervisorError
from sdmesh.storage.errors import StorageError
from sdmesh.storage.model import Volume, VolumeKeeper

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapDecision:
    kind: Literal["domain", "volume"]
    name: str  # domain name or volume path
    pool: str
    reason: str


@dataclass(frozen=True)
class ReapPlan:
    domains: tuple[ManagedDomain, ...]
    volumes: tuple[Volume, ...]
    decisions: tuple[ReapDecision, ...]
    kept_in_grace: int


def _verdict(
    pool: str,
    created_at: float | None,
    *,
    partial: bool,
    live_pools: frozenset[str],
    terminated_pools: frozenset[str],
    now: float,
    grace_s: float,
) -> str | None:
    """Why to remove a resource, or None to keep it."""
    age = math.inf if created_at is None else now - created_at
    if partial:
        return "unfinished creation (crashed midway)" if age >= grace_s else None
    if pool in terminated_pools:
        return f"pool {pool!r} was terminated"
    if pool in live_pools or age < grace_s:
        return None
    return f"pool {pool!r} no longer exists"


def plan_reap(
    *,
    domains: Iterable[ManagedDomain],
    volumes: Iterable[Volume],
    live_pools: Iterable[str],
    now: float,
    grace_s: float,
    terminated_pools: Iterable[str] = (),
) -> ReapPlan:
    """Which domains and volumes to remove; domains first, since volumes may be in use."""
    live = frozenset(live_pools)
    terminated = frozenset(terminated_pools)
    doomed_domains: list[ManagedDomain] = []
    doomed_volumes: list[Volume] = []
    decisions: list[ReapDecision] = []
    kept = 0
    for domain in domains:
        meta = domain.metadata
        reason = _verdict(
            meta.pool,
            meta.created_at,
            partial=False,
            live_pools=live,
            terminated_pools=terminated,
            now=now,
            grace_s=grace_s,
        )
        if reason is None:
            kept += meta.pool not in live
            continue
        doomed_domains.append(domain)
        decisions.append(ReapDecision("domain", domain.name, meta.pool, reason))
    for volume in volumes:
        reason = _verdict(
            volume.owner.pool,
            volume.created_at,
            partial=volume.partial,
            live_pools=live,
            terminated_pools=terminated,
            now=now,
            grace_s=grace_s,
        )
        if reason is None:
            kept += volume.owner.pool not in live
            continue
        doomed_volumes.append(volume)
        decisions.append(ReapDecision("volume", str(volume.path), volume.owner.pool, reason))
    return ReapPlan(tuple(doomed_domains), tuple(doomed_volumes), tuple(decisions), kept)


@dataclass
class ReapReport:
    plan: ReapPlan
    destroyed: list[str] = field(default_factory=list)
    released: list[Volume] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


async def reap(
    driver: HypervisorDriver,
    backends: Sequence[VolumeKeeper],
    *,
    live_pools: Iterable[str],
    grace_s: float,
    terminated_pools: Iterable[str] = (),
    now: float | None = None,
) -> ReapReport:
    """List sdmesh resources on this host, and remove those of pools that are gone.

    A failure on one resource is reported and the rest still proceeds.
    """
    by_name = {backend.name: backend for backend in backends}
    volumes: list[Volume] = []
    for backend in backends:
        volumes.extend(await backend.list_owned())
    plan = plan_reap(
        domains=await driver.list_managed(),
        volumes=volumes,
        live_pools=live_pools,
        terminated_pools=terminated_pools,
        now=time.time() if now is None else now,
        grace_s=grace_s,
    )
    report = ReapReport(plan)
    for domain in plan.domains:
        try:
            await driver.destroy(domain.name)
            report.destroyed.append(domain.name)
        except HypervisorError as exc:
            report.failures.append((domain.name, str(exc)))
    for volume in plan.volumes:
        try:
            await by_name[volume.backend].release(volume)
            report.released.append(volume)
        except StorageError as exc:
            report.failures.append((str(volume.path), str(exc)))
    failed = {name for name, _ in report.failures}
    for decision in plan.decisions:
        if decision.name not in failed:
            _log.info("reaped %s %s: %s", decision.kind, decision.name, decision.reason)
    return report
