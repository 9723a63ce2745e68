"""Shepherd side: the asyncio driver of each pool's shepherd core (sdmesh.pools.shepherd):
its timers, its record saves and orders (record first), the answers fed back, pause and
resume around a lost majority, and the events it emits."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sdmesh.agent.pools.common import RPC_TIMEOUT, TOPIC_POOL, domain_name
from sdmesh.agent.pools.state import PoolState, ShepherdRun
from sdmesh.agent.pools.trees import spec_tree
from sdmesh.pools.records import Order, PoolRecord, PoolSpec
from sdmesh.transport import StreamError

if TYPE_CHECKING:
    from sdmesh.pools import shepherd as sc

log = logging.getLogger(__name__)


class ShepherdDriver(PoolState):
    """Drives the shepherd cores of the pools this agent shepherds."""

    async def _shepherd(
        self,
        spec: PoolSpec,
        generation: int,
        old: PoolRecord | None,
        vouched: Mapping[str, Mapping[str, str]] | None = None,
        signature: bytes = b"",
    ) -> None:
        """Run the pool's shepherd core here (no await inside: a hand-over adopts its pools
        at once). ``vouched``: what a leaving predecessor's host runs of it; ``signature``:
        the operator's envelope of a new pool (a taken-over pool keeps its record's)."""
        from sdmesh.pools import shepherd as sc
        from sdmesh.pools.layout import layout

        if spec.pool in self.shepherding or self.leaving:
            return
        tree = spec_tree(spec)
        record = PoolRecord(
            spec.pool,
            spec.digest,
            generation,
            self.name,
            old.state if old is not None else "deploying",
            dict(old.placement) if old is not None else {},
            old.reason if old is not None else "",
            away=dict(old.away) if old is not None else {},
            vouched=dict(old.vouched) if old is not None else {},
            signature=old.signature if old is not None and old.signature else signature,
        )
        if record.state == "running":
            record = PoolRecord(**{**record.__dict__, "state": "deploying"})
        wall_offset = time.time() - self._loop.time()  # the record's grace ends: wall clock
        offers = self.offers()
        core = sc.Shepherd(record, tree, layout(tree), spec.kinds, offers, wall_offset)
        self.shepherding[spec.pool] = ShepherdRun(core)
        if self.prove is not None:
            # Identities on: only the shepherd's own rumor lifts the name's tombstone on other
            # hosts (a submitter's "deploying" does not), so say at once who runs it now.
            self._publish(
                TOPIC_POOL,
                spec.pool,
                {
                    "digest": spec.digest,
                    "state": record.state,
                    "shepherd": self.name,
                    "generation": generation,
                },
            )
        self._feed(spec.pool, sc.MembersChanged(offers, self.away_hosts()))
        self._feed(spec.pool, sc.Begin(vouched or {}))
        tomb = self.tombs.get(spec.pool)
        # A new pool (no record taken over) is ended only by a tombstone that covers it: an
        # older one belongs to the name's earlier pool (a resubmission starts above it).
        if tomb is not None and (old is not None or tomb.covers(generation)):
            self._feed(spec.pool, sc.TerminateRequested("terminated on request"))

    def _stop_shepherding(self, pool: str) -> None:
        run = self.shepherding.pop(pool, None)
        if run is not None:
            for handle in run.timers.values():
                handle.cancel()
            if run.flushing is not None and not run.flushing.done():
                run.flushing.cancel()  # what it queued must not go out any more

    def _pause(self, pool: str) -> None:
        """No majority: the core decides nothing until ``Resume``, and what it had queued
        (orders, a save) is dropped; the core resends it on resume."""
        from sdmesh.pools import shepherd as sc

        run = self.shepherding.get(pool)
        if run is None or run.core.paused:
            return
        run.core.handle(sc.Pause(), self._loop.time())
        run.orders.clear()
        run.save = None

    async def _resume(self, pool: str, run: ShepherdRun) -> None:
        """The majority is back: go on with the same core, unless another shepherd took the
        pool over meanwhile (a newer record): then its state is stale, take it over again."""
        from sdmesh.pools import shepherd as sc

        try:
            stored = await self.read_record(pool, newest=True)
        finally:
            run.resuming = False
        if self.shepherding.get(pool) is not run or not run.core.paused or self._gate.paused:
            return
        if stored is not None and run.core.superseded_by(stored):
            log.info(
                "pool %s: shepherded at generation %d while this agent had no majority; "
                "taking it over again",
                pool,
                stored.generation,
            )
            self._stop_shepherding(pool)
            self._start_take_over(pool)
            return
        log.info(
            "pool %s: majority back, shepherding on at generation %d", pool, run.core.generation
        )
        self._feed(pool, sc.Resume())

    def _feed(self, pool: str, event: sc.Event) -> None:
        run = self.shepherding.get(pool)
        if run is None:
            return
        for action in run.core.handle(event, self._loop.time()):
            self._shepherd_action(pool, run, action)
        idle = run.flushing is None or run.flushing.done()
        if (run.save is not None or run.orders) and idle:
            run.flushing = self._spawn(self._flush(pool, run))

    def _shepherd_action(self, pool: str, run: ShepherdRun, action: sc.Action) -> None:
        from sdmesh.pools import shepherd as sc

        if isinstance(action, sc.SaveRecord):
            run.save = self._ended_through(pool, action.record)
        elif isinstance(action, sc.SendOrder):
            run.orders[action.host].append(action.order)
        elif isinstance(action, sc.SetTimer):
            old = run.timers.pop(action.name, None)
            if old is not None:
                old.cancel()
            run.timers[action.name] = self._loop.call_at(action.at, self._timer, pool, action.name)
        elif isinstance(action, sc.ComponentChanged):
            if action.state == "failed":
                where = f" on {action.host}" if action.host else ""
                log.warning(
                    "pool %s: %s failed%s: %s", pool, action.path, where, action.reason or "?"
                )
            event = {
                "pool": pool,
                "path": action.path,
                "kind": action.kind,
                "state": action.state,
                "host": action.host,
                "domain": domain_name(pool, action.path, action.path in run.core.layout.units),
            }
            self._emit(run, event)
        elif isinstance(action, sc.PoolChanged):
            level = logging.WARNING if action.state == "failed" else logging.INFO
            log.log(level, "pool %s: %s %s", pool, action.state, action.reason)
            self._publish(
                TOPIC_POOL,
                pool,
                {
                    "digest": run.core.digest,
                    "state": action.state,
                    "shepherd": self.name,
                    "generation": run.core.generation,
                },
            )
            self._emit(
                run,
                {
                    "pool": pool,
                    "state": action.state,
                    "reason": action.reason,
                    "generation": run.core.generation,
                },
            )
            if action.state in ("terminated", "failed"):
                self._loop.call_soon(self._finished, pool)
        elif isinstance(action, sc.Warning):
            log.warning("pool %s: %s: %s", pool, action.path, action.message)
        elif isinstance(action, sc.Superseded):
            self._step_down(pool, run, action.seen)
        elif isinstance(action, sc.ReclaimHost):
            log.info("pool %s: %s is lost; its units move once its lease ended", pool, action.host)
            self._spawn(self._reclaim(pool, run, action.host))
        elif isinstance(action, sc.CancelReclaim) and self.lease is not None:
            self.lease.cancel_reclaim(action.host)

    def _ended_through(self, pool: str, record: PoolRecord) -> PoolRecord:
        """An ended pool's record, raised to the generation of the tombstone that ended it
        when that is higher (a signed one ends up to the signed generation, newest + SLACK:
        sdmesh.trust.termination). A resubmission of the name starts above its record's
        generation (operations.submit), so above that tombstone even once every agent has
        forgotten it (after POOL_RETENTION, or restarted): the tombstone's public signature,
        replayed, never covers the new pool. A live record keeps the run's generation."""
        tomb = self.tombs.get(pool)
        if record.state not in ("terminated", "failed") or tomb is None:
            return record
        if tomb.generation <= record.generation:
            return record
        return dataclasses.replace(record, generation=tomb.generation)

    async def _reclaim(self, pool: str, run: ShepherdRun, host: str) -> None:
        """Wait until ``host``'s lease has surely ended (a majority of voters says so: it
        stopped its fenceable VMs), then let the core rebuild its units. Without leases the
        units move at once, as before leases."""
        from sdmesh.pools import shepherd as sc

        if self.lease is not None:
            try:
                await self.lease.reclaim(host)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the service is closing
                return  # the host came back (CancelReclaim)
            log.info("pool %s: %s's lease has ended: its units may be rebuilt", pool, host)
        if self.shepherding.get(pool) is run:
            self._feed(pool, sc.HostReclaimed(host))

    def _step_down(self, pool: str, run: ShepherdRun, seen: int) -> None:
        """A host fenced this core (another shepherd ran the pool at generation ``seen``):
        stop it, then take the pool over again from the newest record if it is still ours
        (the takeover checks), above ``seen``; else its shepherd runs it."""
        log.warning(
            "pool %s: a host has seen generation %d from another shepherd (this one ran %d): "
            "stepping down and reading the pool's record again",
            pool,
            seen,
            run.core.generation,
        )
        run.orders.clear()
        run.save = None
        self._stop_shepherding(pool)
        self._takeover_floor[pool] = max(seen, self._takeover_floor.get(pool, 0))
        self._start_take_over(pool)

    def _emit(self, run: ShepherdRun, event: Mapping[str, object]) -> None:
        event = dict(event)
        run.events.append(event)
        del run.events[:-4096]
        for listener in self.listeners:
            listener(event)

    def _timer(self, pool: str, name: str) -> None:
        from sdmesh.pools import shepherd as sc

        run = self.shepherding.get(pool)
        if run is not None:
            run.timers.pop(name, None)
            self._feed(pool, sc.TimerFired(name))

    def _finished(self, pool: str) -> None:
        run = self.shepherding.get(pool)
        if run is not None and (run.flushing is None or run.flushing.done()):
            self._stop_shepherding(pool)
            self._finished_runs[pool] = run
        elif run is not None:
            self._loop.call_later(0.2, self._finished, pool)

    async def _flush(self, pool: str, run: ShepherdRun) -> None:
        """Save the record first (orders depend on it), then send each host its orders."""
        from sdmesh.pools import shepherd as sc

        await asyncio.sleep(0)
        while run.save is not None or run.orders:
            if self.shepherding.get(pool) is not run or run.core.paused:
                return  # stopped or without a majority: nothing queued may go out
            record, run.save = run.save, None
            if record is not None:
                await self.write_record(record)
            if self.shepherding.get(pool) is not run or run.core.paused:
                return
            batches, run.orders = run.orders, defaultdict(list)
            results = await asyncio.gather(
                *(self._send_orders(host, orders) for host, orders in batches.items())
            )
            if self.shepherding.get(pool) is not run:
                return
            for (host, orders), answers in zip(batches.items(), results, strict=True):
                for order, answer in zip(orders, answers, strict=True):
                    outcome, reason, seen = answer
                    if outcome != "accepted":
                        self._feed(pool, sc.Answered(host, order, outcome, reason, seen))

    async def _send_orders(self, host: str, orders: list[Order]) -> list[list[Any]]:
        if host == self.name:
            return self.take_orders(orders)
        addr = self._address(host)
        unreachable: list[list[Any]] = [["unreachable", "", 0] for _ in orders]
        if addr is None:
            return unreachable
        try:
            reply = await self.client.request(
                addr,
                {"rpc": "orders", "orders": [o.to_wire() for o in orders]},
                timeout=RPC_TIMEOUT,
            )
        except (StreamError, OSError) as error:
            log.debug("orders to %s failed: %s", host, error)
            return unreachable
        answers = reply.get("answers") if isinstance(reply, dict) else None
        if not isinstance(answers, list) or len(answers) != len(orders):
            return unreachable
        return [
            a if isinstance(a, list) and len(a) == 3 else ["unreachable", "", 0] for a in answers
        ]
