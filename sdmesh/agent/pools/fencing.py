"""Leases on the host side (sdmesh.ha, docs/ha.md): this host runs a fenceable VM (one the
mesh would rebuild elsewhere: a ``restart`` policy and ``isolation "stop"``) only while it
holds a lease, and stops every such VM when the lease is lost, before anyone else may
rebuild it.

* A new unit is admitted only under a lease (an ``admission_guards`` refusal otherwise: the
  shepherd places it elsewhere); a unit whose policy is not known yet counts as fenceable.
* Before a fenceable VM starts, the fence guard is told (``rearm``), and the start is refused
  unless it took the arm (when a guard is configured); a start during which the lease
  lapsed is undone (the VM began before a fence the mesh relies on).
* ``fence`` (the lease service's isolation response) destroys the running fenceable VMs and
  reports each as ended once its destroy is confirmed; a failed destroy is retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sdmesh.agent.pools.common import PoolError, domain_name
from sdmesh.agent.pools.state import PoolState
from sdmesh.pools import host as hc
from sdmesh.pools.records import Order

if TYPE_CHECKING:
    from sdmesh.language.values import ComponentDescription

log = logging.getLogger(__name__)

#: Why a host without a lease takes on no new fenceable unit (the shepherd's warning).
NO_LEASE = "no lease: cut off from the mesh's majority"
#: Why a host that just regained its lease after losing it takes on no new fenceable unit
#: for a few seconds: an order sent before the cut may still arrive (LeaseService.may_start).
JUST_BACK = "lease just regained after a cut: no new restartable VM for a few seconds"
#: Why a host whose fence guard did not take the arm starts no fenceable VM: were the agent
#: to die, nothing would stop it before the mesh rebuilt it elsewhere.
NO_GUARD = "the fence guard was not armed: no restartable VM starts on this host"
#: A failed fence destroy is tried again after this long, doubling up to the maximum.
FENCE_RETRY_FIRST = 0.5
FENCE_RETRY_MAX = 10.0
#: Seconds a failed VM start may spend making sure its guest is gone.
FAILED_START_DESTROY = 30.0


def fenceable_units(tree: ComponentDescription) -> frozenset[str]:
    """The units (VM paths) of a resolved tree that a lease protects."""
    from sdmesh.ha.policy import fenceable
    from sdmesh.pools.layout import LayoutError, layout

    try:
        cut = layout(tree)
    except LayoutError:
        return frozenset()  # refused at submission; nothing of it runs
    return frozenset(u.path for u in cut.units.values() if fenceable(u.restart, u.isolation))


class Fencing(PoolState):
    """The pool service's side of the lease: admission, starts, and the isolation response."""

    def unit_fenceable(self, pool: str, unit: str) -> bool | None:
        """Whether the lease protects this unit; None while the pool's descriptor is not
        loaded here (treated as fenceable: a second copy is the worse mistake)."""
        hosted = self._host_pools.get(pool)
        if hosted is None or hosted.fenceable is None:
            return None
        return unit in hosted.fenceable

    def fenceable(self) -> frozenset[tuple[str, str]]:
        """This host's fenceable (pool, VM path) pairs, for the fence guard: every VM unit
        it holds (admitted, being started, running) that the lease protects."""
        pairs = set()
        for pool in self.host.pools_held():
            for path, leaf in self.host.pools[pool].leaves.items():
                if path == leaf.unit and self.unit_fenceable(pool, path) is not False:
                    pairs.add((pool, path))
        return frozenset(pairs)

    def lease_veto(self, order: Order) -> str | None:
        """The ``admission_guards`` entry: no new fenceable unit without a lease (nor just
        after regaining one: ``LeaseService.may_start``)."""
        if self.lease is None or self.lease.may_start():
            return None
        fenceable = self.unit_fenceable(order.pool, order.unit)
        if fenceable is False:
            return None
        if self.lease.may_run():
            # Just back: only a unit known to be restartable waits; one of a pool whose
            # descriptor is not loaded yet is admitted (its deploy starts nothing, and its
            # start is checked again once the descriptor says whether it is restartable).
            return JUST_BACK if fenceable else None
        return NO_LEASE

    def start_refusal(self, pool: str, unit: str) -> str | None:
        """Consulted just before a VM starts: why it may not (no lease), else None. Under a
        lease, the fence guard is told first that this VM is fenceable."""
        if self.lease is None or self.unit_fenceable(pool, unit) is False:
            return None
        if not self.lease.may_start():
            return JUST_BACK if self.lease.may_run() else NO_LEASE
        if not self.lease.rearm():
            return NO_GUARD
        return None

    def fence(self, reason: str) -> list[tuple[str, str]]:
        """The isolation response: destroy this host's running fenceable VMs, at once, and
        report each as ended once its destroy is confirmed (retried until it is: the
        shepherd must not hear "ended" of a VM that may still run). Starts under way are
        undone when they end (``lapses``)."""
        fenced = []
        for pool in self.host.pools_held():
            for path, leaf in list(self.host.pools[pool].leaves.items()):
                if path != leaf.unit or leaf.state != "running" or leaf.op is not None:
                    continue
                if self.unit_fenceable(pool, path) is False or (pool, path) in self._fencing:
                    continue
                fenced.append((pool, path))
        if not fenced:
            return []
        log.warning("lease lost (%s): stopping %d restartable VMs", reason, len(fenced))
        for pool, path in fenced:
            self._fencing.add((pool, path))
            self._spawn(self._fence_one(pool, path))
        return fenced

    async def _fence_one(self, pool: str, path: str) -> None:
        try:
            await self._destroy_surely(pool, path)
        finally:
            self._fencing.discard((pool, path))
        self._host_feed(hc.LeafDied(pool, path, "fenced: lease lost"))

    async def _destroy_surely(self, pool: str, path: str) -> None:
        """Destroy the unit's domain, retrying with backoff until libvirt confirms it (or
        says it is gone). Meanwhile the fence guard, if any, is the backstop."""
        delay = FENCE_RETRY_FIRST
        while True:
            try:
                await self.driver.destroy(domain_name(pool, path, True))
                return
            except Exception as error:
                log.error(
                    "pool %s: fencing %s failed (%s): trying again in %.1f s",
                    pool, path, error, delay,
                )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, FENCE_RETRY_MAX)

    async def _destroy_failed_start(self, pool: str, path: str) -> None:
        """A VM start that failed may still have left the guest running (libvirt created it,
        then a later call failed): destroy it before the failure reaches the shepherd, which
        moves the unit elsewhere. Bounded: with libvirtd unreachable the fence guard is the
        backstop."""
        try:
            await asyncio.wait_for(self._destroy_surely(pool, path), FAILED_START_DESTROY)
        except TimeoutError:
            log.error(
                "pool %s: %s failed to start and could not be destroyed in %.0f s",
                pool, path, FAILED_START_DESTROY,
            )  # fmt: skip

    async def undo_start(self, pool: str, path: str) -> str:
        """A start during which the lease lapsed: destroy what it started (retried until
        confirmed, as a fence is). The leaf's error."""
        await self._destroy_surely(pool, path)
        return "fenced: the lease was lost while it started"

    def load_policies(self, pools: dict[str, str]) -> None:
        """Recovered pools (pool -> descriptor digest, from libvirt's metadata): load their
        descriptors in the background so fencing knows which of their VMs it protects."""
        for pool, digest in pools.items():
            self._digests.setdefault(pool, digest)
            self._policy_loads.append(self._spawn(self._load_policy(pool)))

    async def policies_known(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the recovered pools' policies: a fence at start-up
        then spares the VMs the mesh would never rebuild (their descriptors are usually in
        this host's own spec files)."""
        loads, self._policy_loads = self._policy_loads, []
        if loads:
            await asyncio.wait(loads, timeout=timeout)

    async def _load_policy(self, pool: str) -> None:
        try:
            await self._hosted(pool)
        except PoolError as error:
            log.info("pool %s: its descriptor is not here yet (%s): its VMs count as "
                     "restartable until it is", pool, error)  # fmt: skip
