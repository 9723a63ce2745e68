"""What hosts tell shepherds: reports of leaf operations (retried with backoff until
the pool's shepherd takes them) and the periodic inventory that reconciles the rest; the
reaper's pass over pools nobody shepherds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict

from sdmesh.agent.pools.common import RPC_TIMEOUT, TOMBSTONE_GRACE
from sdmesh.agent.pools.state import PoolState
from sdmesh.pools import host as hc
from sdmesh.pools.records import Report, retry_delay
from sdmesh.transport import StreamError

log = logging.getLogger(__name__)

#: How many times a report is sent again (bounded backoff) before it is left to the
#: inventory, which reconciles the same every INVENTORY_PERIOD.
REPORT_ATTEMPTS = 12
#: After the agent starts, or when a member comes back, hosts send their inventories this
#: soon instead of a whole inventory period later: stale copies are released and lost VMs
#: rebuilt within seconds of a heal, restart or rejoin.
INVENTORY_SOON = 2.0


class HostReports(PoolState):
    """Reports and inventories from this host to the pools' shepherds."""

    def _queue_report(self, shepherd: str, report: Report, attempt: int = 0) -> None:
        target = shepherd or self.shepherd_for(report.pool) or ""
        if target == self.name:
            if self._deliver_reports([report]):
                self._report_later(report, attempt)  # not ours (yet): a takeover may follow
            return
        if not target:
            self._report_later(report, attempt)
            return
        self._reports[target].append((report, attempt))
        if self._report_task is None or self._report_task.done():
            self._report_task = self._spawn(self._flush_reports())

    def _report_later(self, report: Report, attempt: int) -> None:
        """Until the pool's shepherd takes the report (a VM death noticed by nobody is never
        restarted), with a bounded backoff; then the inventory reconciles the same."""
        known = self.known.get(report.pool)
        if (
            attempt + 1 >= REPORT_ATTEMPTS
            or report.pool not in self.host.pools
            or report.pool in self.tombs
            or (known is not None and known.state in hc.ENDED_STATES)
        ):
            if attempt + 1 >= REPORT_ATTEMPTS:
                log.warning(
                    "pool %s: no shepherd took the report on %s (%s); left to the inventory",
                    report.pool,
                    report.path,
                    report.op,
                )
            return
        self._loop.call_later(
            retry_delay(attempt), lambda: self._queue_report("", report, attempt + 1)
        )

    async def _flush_reports(self) -> None:
        await asyncio.sleep(0)  # let a burst of reports gather into one request per shepherd
        while self._reports:
            batches, self._reports = self._reports, defaultdict(list)
            await asyncio.gather(
                *(self._send_reports(target, batch) for target, batch in batches.items())
            )

    async def _send_reports(self, target: str, batch: list[tuple[Report, int]]) -> None:
        addr = self._address(target)
        reply: object = None
        if addr is not None:
            try:
                reply = await self.client.request(
                    addr,
                    {"rpc": "reports", "reports": [r.to_wire() for r, _ in batch]},
                    timeout=RPC_TIMEOUT,
                )
            except (StreamError, OSError) as error:
                log.debug("reports to %s failed: %s", target, error)
        if not isinstance(reply, dict) or not reply.get("ok"):
            unknown = {report.pool for report, _ in batch}
        else:  # an agent from before "unknown" was answered took them all
            listed = reply.get("unknown")
            unknown = {str(p) for p in listed} if isinstance(listed, list) else set()
        for report, attempt in batch:
            if report.pool in unknown:
                self._report_later(report, attempt)

    def _deliver_reports(self, reports: list[Report]) -> list[str]:
        """Feed reports to the pools shepherded here; the pools of the others."""
        from sdmesh.pools import shepherd as sc

        unknown: list[str] = []
        for report in reports:
            if report.pool in self.shepherding:
                self._feed(report.pool, sc.Reported(report))
            elif report.pool not in unknown:
                unknown.append(report.pool)
        return unknown

    def _inventory_soon(self) -> None:
        """Send every inventory shortly (once, however many times it is asked meanwhile)."""
        if self._inventory_due is not None:
            return

        def due() -> None:
            self._inventory_due = None
            self._spawn(self.send_inventories())

        self._inventory_due = self._loop.call_later(INVENTORY_SOON, due)

    async def send_inventories(self) -> None:
        """Each pool held here, on its own: one pool's failure must not skip the others."""
        now = time.monotonic()
        for pool in self.host.pools_held():
            try:
                await self._inventory_pool(pool, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pool %s: inventory, tombstone or reaper pass failed", pool)

    async def _inventory_pool(self, pool: str, now: float) -> None:
        tomb = self.tombs.get(pool)
        if tomb is not None:
            if now - tomb.since > TOMBSTONE_GRACE:
                self._host_feed(hc.PoolTerminated(pool, tomb.generation))
            return
        known = self.known.get(pool)
        if known is None or known.state in hc.ENDED_STATES:
            # Nobody may shepherd it: what it left here is the reaper's, on the record's word.
            answered, record = await self.lookup_record(pool)
            verdict = self._reaper.judge(
                pool, now, quorate=self.has_quorum(), answered=answered, record=record
            )
            if verdict is not None:
                why = "unknown to the mesh" if record is None else f"{record.state}"
                log.warning("pool %s is %s: removing its leftovers", pool, why)
                self._host_feed(verdict)
                return
            if record is None or record.state in hc.ENDED_STATES:
                return
        else:
            self._reaper.forget(pool)
        leaves, states = self.host.inventory(pool), self.host.states(pool)
        shepherd = self.shepherd_for(pool)
        if shepherd == self.name:
            self._handle_inventory(pool, self.name, leaves, states)
        elif shepherd is not None:
            addr = self._address(shepherd)
            if addr is not None:
                request = {
                    "rpc": "inventory",
                    "pool": pool,
                    "host": self.name,
                    "leaves": leaves,
                    "states": states,
                }
                with contextlib.suppress(StreamError, OSError):
                    await self.client.request(addr, request, timeout=RPC_TIMEOUT)

    def _handle_inventory(
        self, pool: str, host: str, leaves: dict[str, int], states: dict[str, str]
    ) -> None:
        from sdmesh.pools import shepherd as sc

        if pool in self.shepherding:
            self._feed(pool, sc.Inventory(host, leaves, states))
