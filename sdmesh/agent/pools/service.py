"""The pool service: the parts of sdmesh.agent.pools assembled, with its life cycle, its
RPC entry point and its periodic work (inventories, announcements, forgetting ended pools)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sdmesh.agent.pools.authz import MeshAuthz
from sdmesh.agent.pools.common import KnownPool, PoolError
from sdmesh.agent.pools.fencing import Fencing
from sdmesh.agent.pools.following import ViewFollower
from sdmesh.agent.pools.handover import HandOver
from sdmesh.agent.pools.hosting import HostSide
from sdmesh.agent.pools.operations import PoolOperations
from sdmesh.agent.pools.reports import HostReports
from sdmesh.agent.pools.rumors import ANNOUNCE_PERIOD, RumorFollower
from sdmesh.agent.pools.sealing import RecordSeals
from sdmesh.agent.pools.shepherding import ShepherdDriver
from sdmesh.agent.pools.store import PoolStore
from sdmesh.agent.pools.trees import forget_trees, tree_of
from sdmesh.agent.pools.view import MembershipView
from sdmesh.pools import host as hc
from sdmesh.pools.authz import GENERATION, SentBy
from sdmesh.pools.generations import generation_refusal, is_generation
from sdmesh.pools.records import Order, PoolSpec, RecordFormatError, Report, checked_ids

log = logging.getLogger(__name__)

#: How often each host sends its inventory to the shepherds of the pools it holds.
INVENTORY_PERIOD = 15.0
#: How long an ended pool's bookkeeping (tombstone, gossip, cached spec, tree, status) is
#: kept: past the rumor TTL (a day), so a late copy of its tombstone is not taken as new.
POOL_RETENTION = 26 * 3600.0
#: Closing waits this long at most for cancelled tasks and each pool's host context.
CLOSE_TIMEOUT = 1.0


class PoolService(
    MeshAuthz,
    RecordSeals,
    ViewFollower,
    MembershipView,
    RumorFollower,
    HostSide,
    Fencing,
    HostReports,
    ShepherdDriver,
    HandOver,
    PoolStore,
    PoolOperations,
):
    """The asyncio driver of the host core and of the shepherd cores of one agent."""

    # =================================================================== life cycle
    async def start(self) -> None:
        """Rebuild this host's share from libvirt, then follow the mesh."""
        await self._recover()
        self.node.listeners.append(lambda _event: self._view_changed())
        self.node.listeners.append(lambda _event: self.retry_parked())  # writers now known
        self.node.listeners.append(lambda _event: self.forget_stale_admissions())
        self.node.rumor_listeners.append(self._on_rumor)
        for rumor in self.node.core.rumors():
            self._on_rumor(rumor)
        if self._hints:  # pools heard of before start from writers unknown here
            self._view_changed()
        self._periodic = self._loop.create_task(self._periodic_work())
        self._inventory_soon()  # what the host found in libvirt, told to the shepherds now

    async def close(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
        if self._inventory_due is not None:
            self._inventory_due.cancel()
        for run in self.shepherding.values():
            for handle in run.timers.values():
                handle.cancel()
        for handle in self._takeover_retry.values():
            handle.cancel()
        self._takeover_retry.clear()
        for task in list(self._tasks):
            task.cancel()
        # Bounded: a cancelled libvirt call may not end at once, and systemd kills the
        # agent at TimeoutStopSec (20 s) while the leave already used most of it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True), CLOSE_TIMEOUT
            )
        contexts = [hosted.context.close() for hosted in self._host_pools.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*contexts, return_exceptions=True), CLOSE_TIMEOUT)

    # ======================================================================== RPC
    async def handle_rpc(self, request: dict[str, Any], sent_by: SentBy | None = None) -> object:
        """A request from another member; ``sent_by(name)`` says whether it comes from member
        ``name`` (None: nobody can tell, e.g. a local call), for the checks of MeshAuthz."""
        kind = request.get("rpc")
        try:
            if kind == "orders":
                orders = [Order.from_wire(o) for o in request.get("orders", [])]
                return {"answers": self.take_authorized_orders(orders, sent_by)}
            if kind == "reports":
                reports = [Report.from_wire(r) for r in request.get("reports", [])]
                reports = self.reports_from_sender(reports, sent_by)
                # Pools we do not shepherd: the sender tries their shepherd again later.
                return {"ok": True, "unknown": self._deliver_reports(reports)}
            if kind == "inventory":
                pool, host, leaves = request["pool"], request["host"], request["leaves"]
                states = request.get("states") or {}
                if isinstance(leaves, dict):
                    checked_ids(pool=pool, names=(host,), paths=tuple(leaves))
                    if not all(is_generation(v) for v in leaves.values()):
                        raise ValueError("an inventory's generations must be bounded integers")
                    refused = self.sender_refusal(str(host), sent_by, "an inventory")
                    if refused is not None:
                        return {"error": refused}
                    self._handle_inventory(
                        pool,
                        str(host),
                        {str(k): int(v) for k, v in leaves.items()},
                        {str(k): str(v) for k, v in dict(states).items()},
                    )
                return {"ok": True}
            if kind == "submit":
                # Everything checked before anything changes.
                spec = PoolSpec.decode(request["spec"])
                generation = request.get("generation", 1)
                problem = generation_refusal(generation)
                if problem is not None:
                    return {"ok": False, "error": self.refusals.refuse(GENERATION, problem)}
                signature = request.get("signature") or b""
                if not isinstance(signature, bytes):
                    raise TypeError("'signature' must be bytes")
                sender = request.get("from")
                refused = self.sender_refusal(
                    sender if isinstance(sender, str) else "", sent_by, "a submission"
                )
                refused = refused or self.submit_refusal(spec.pool)
                assert isinstance(generation, int)
                refused = refused or self.resurrection_refusal(spec.pool, generation, signature)
                if refused is not None:
                    return {"ok": False, "error": refused}
                if self.leaving or not self.has_quorum():
                    why = "leaving the mesh" if self.leaving else "no majority of the mesh"
                    return {"ok": False, "error": f"{self.name}: {why}"}
                self._specs[spec.digest] = spec
                try:
                    await tree_of(spec)  # from another agent: resolved here, off the loop
                    await self.store_spec(spec)
                except PoolError as error:
                    return {"ok": False, "error": str(error)}
                self.known[spec.pool] = KnownPool(
                    spec.digest, "deploying", self.name, time.monotonic(), generation
                )
                tomb = self.tombs.get(spec.pool)
                if tomb is not None and not tomb.covers(generation):
                    del self.tombs[spec.pool]  # a resubmission: the tombstone is the old pool's
                await self._shepherd(spec, generation, None, signature=signature)
                return {"ok": True}
            if kind == "spec":  # a host that missed the descriptor in the DHT
                data = await self.held_spec(str(request.get("digest", "")))
                return {"spec": data} if data is not None else {"error": "descriptor not held"}
            if kind == "status":
                checked_ids(pool=request.get("pool"))
                return self.local_status(str(request.get("pool")))
            if kind == "handover":
                checked_ids(pool=request.get("pool"))
                refused = self.sender_refusal(str(request.get("from", "")), sent_by, "a hand-over")
                if refused is not None:
                    return {"error": refused}
                return await self._adopt(request)
            if kind == "terminate":
                checked_ids(pool=request.get("pool"))
                pool = str(request.get("pool"))
                known = self.known.get(pool)
                default = known.generation if known is not None else 0
                wanted = request.get("generation", default)
                signature = request.get("signature") or b""
                refused = self.terminate_refusal(pool, wanted, signature)
                if refused is not None:
                    return {"ok": False, "error": refused}
                # The operator's signature passed on as received, never one of ours (no
                # laundering); without a trust store, none (nothing checks it).
                if self.termination_check is None or not isinstance(signature, bytes):
                    signature = b""
                not_ended = self._terminate_here(pool, int(wanted), signature)
                if not_ended is not None:  # a run above what was signed: the caller's 409
                    return {"ok": False, "error": not_ended, "conflict": True}
                return {"ok": True}
        except (RecordFormatError, KeyError, TypeError, ValueError) as error:
            log.warning("malformed %s request: %s", kind, error)
            return {"error": str(error)}
        return {"error": f"unknown request {kind!r}"}

    # ==================================================================== periodic
    async def _periodic_work(self) -> None:
        """Inventory to each pool's shepherd (reconciliation), tombstones, the reaper, the
        pools' rumors again before they expire, and forgetting pools long ended."""
        announced = time.monotonic()
        while True:
            await asyncio.sleep(INVENTORY_PERIOD)
            try:
                await self.send_inventories()
                now = time.monotonic()
                if now - announced >= ANNOUNCE_PERIOD:
                    announced = now
                    self.announce()
                    self.reseal_records()  # identities on: under the current certificate
                self.prune(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic pool work failed")

    def prune(self, now: float) -> list[str]:
        """Forget pools that ended more than POOL_RETENTION ago and hold nothing here (their
        tombstone, gossip, status, cached spec and tree, host context): per-pool data must
        not grow with every pool the mesh ever ran. The pools forgotten."""
        held = set(self.host.pools_held())
        ended: list[str] = []
        for pool in set(self.tombs) | set(self.known) | set(self._finished_runs):
            tomb, known = self.tombs.get(pool), self.known.get(pool)
            since = [tomb.since] if tomb is not None else []
            if known is not None and known.state in hc.ENDED_STATES:
                since.append(known.seen)
            if known is not None and tomb is None and known.state not in hc.ENDED_STATES:
                continue  # alive as far as we know
            if not since or now - max(since) < POOL_RETENTION:
                continue
            if pool in held or pool in self.shepherding:
                continue
            ended.append(pool)
        for pool in ended:
            self.tombs.pop(pool, None)
            self.known.pop(pool, None)
            self._finished_runs.pop(pool, None)
            self._digests.pop(pool, None)
            self._signatures.pop(pool, None)
            self._takeover_misses.pop(pool, None)
            self._takeover_floor.pop(pool, None)
            retry = self._takeover_retry.pop(pool, None)
            if retry is not None:
                retry.cancel()
            self._reaper.forget(pool)
            self.host.forget(pool)
            hosted = self._host_pools.pop(pool, None)
            if hosted is not None:
                self._spawn(hosted.context.close())
        if ended:
            used = {k.digest for k in self.known.values()} | set(self._digests.values())
            used |= {run.core.digest for run in self.shepherding.values()}
            used |= {run.core.digest for run in self._finished_runs.values()}
            used |= {hosted.spec.digest for hosted in self._host_pools.values()}
            for digest in [d for d in self._specs if d not in used]:
                del self._specs[digest]
            forget_trees(used)
            log.info("forgot %d pools that ended over a day ago", len(ended))
        return ended
