"""Following the membership view: pause without a majority, hand a pool back to its
new shepherd, and take over the pools this agent now shepherds (one task per pool, with
backoff while no usable record is found)."""

from __future__ import annotations

import asyncio
import logging

from sdmesh.agent.pools.common import PoolError
from sdmesh.agent.pools.state import PoolState
from sdmesh.agent.pools.trees import tree_of
from sdmesh.membership import State
from sdmesh.pools.records import retry_delay

log = logging.getLogger(__name__)

#: A takeover that finds no usable record (missing, or the DHT did not answer) is tried
#: again after this many seconds, doubling up to TAKEOVER_RETRY_MOST.
TAKEOVER_RETRY_FIRST = 2.0
TAKEOVER_RETRY_MOST = 60.0


class ViewFollower(PoolState):
    """Reacts to view changes: the shepherd side's pause, hand-back and takeover."""

    def _apply_view(self) -> None:
        from sdmesh.pools import shepherd as sc

        self._view_pending = False
        if self.leaving:
            return  # the hand-over (leave) owns our pools now; our own host is not an offer
        self._prune_departing()
        live = frozenset(m.name for m in self.live_members())
        if live - self._live_before and self.host.pools_held():
            self._inventory_soon()  # a member is back (a heal, a rejoin): reconcile now
        self._live_before = live
        away = self.away_hosts()
        quorate = self.has_quorum()
        was_paused = self._gate.paused
        dead = [m.name for m in self.node.core.members() if m.state is State.DEAD]
        now = self._loop.time()
        may_act = self._gate.observe(quorate, dead, now)
        for name in away:
            self._losses.forget(name)  # a leave is announced, not a verdict to confirm
        self._losses.observe(live, may_act, now)
        offers = self.offers()  # the lost members not confirmed yet still count
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        due = [t for t in (self._gate.recheck_at(), self._losses.recheck_at()) if t is not None]
        if due:
            self._recheck = self._loop.call_at(min(due), self._view_changed)
        if not may_act and not was_paused and self.shepherding:
            log.warning(
                "this agent sees no majority of the mesh: its %d pools pause (no order, no "
                "move) until it does",
                len(self.shepherding),
            )
        for pool in list(self.shepherding):
            if not may_act:
                self._pause(pool)
                self._feed(pool, sc.MembersChanged(offers, away))  # kept for the resume
            elif self.shepherd_for(pool) != self.name:
                log.info(
                    "pool %s: %s is its shepherd now; handing over", pool, self.shepherd_for(pool)
                )
                self._stop_shepherding(pool)
            else:
                self._feed(pool, sc.MembersChanged(offers, away))
                run = self.shepherding[pool]
                if run.core.paused and not run.resuming:
                    run.resuming = True
                    self._spawn(self._resume(pool, run))
        if not quorate or not may_act:
            return
        for pool in [p for p in self._hints if p in self.known or p in self.shepherding]:
            del self._hints[pool]  # what this host knows of it now says more
        for pool, known in [*self.known.items(), *self._hints.items()]:
            tomb = self.tombs.get(pool)
            if (
                pool not in self.shepherding
                and (tomb is None or not tomb.covers(known.generation))
                and known.state not in ("terminated", "failed")
                and self.shepherd_for(pool) == self.name
                and not self._being_handed_over(pool)
            ):
                self._start_take_over(pool)

    def _start_take_over(self, pool: str) -> None:
        """Take the pool over, unless a takeover of it is under way already or waits for its
        retry (which looks at the view again when due)."""
        running = self._takeovers.get(pool)
        if (running is not None and not running.done()) or pool in self._takeover_retry:
            return
        task = self._spawn(self._take_over(pool))
        self._takeovers[pool] = task
        task.add_done_callback(lambda done: self._takeover_ended(pool, done))

    def _takeover_ended(self, pool: str, task: asyncio.Task[None]) -> None:
        if self._takeovers.get(pool) is task:
            del self._takeovers[pool]

    def _retry_take_over(self, pool: str, why: str) -> None:
        """No usable record to take the pool over from: try again later, backing off (a
        warning the first time, then quietly)."""
        misses = self._takeover_misses.get(pool, 0)
        self._takeover_misses[pool] = misses + 1
        delay = retry_delay(misses, TAKEOVER_RETRY_FIRST, TAKEOVER_RETRY_MOST)
        level = logging.WARNING if misses == 0 else logging.DEBUG
        log.log(level, "pool %s: cannot take it over: %s; trying again in %.0f s", pool, why, delay)
        old = self._takeover_retry.pop(pool, None)
        if old is not None:
            old.cancel()
        self._takeover_retry[pool] = self._loop.call_later(delay, self._takeover_due, pool)

    def _takeover_due(self, pool: str) -> None:
        self._takeover_retry.pop(pool, None)
        self._view_changed()  # still ours, still without a shepherd: taken over from there

    async def _take_over(self, pool: str) -> None:
        """Become the pool's shepherd from its record in the DHT (a higher generation). Our
        own record file only counts when the DHT answered and had no newer one: when the
        lookup failed, it may be stale (another shepherd ran the pool since)."""
        if pool in self.shepherding or self.leaving or not self.has_quorum():
            return
        answered, record = await self.lookup_record(pool)
        if not answered:
            self._retry_take_over(pool, "its record could not be read from the DHT")
            return
        local = await self._local_record(pool)
        if local is not None and (record is None or local.generation > record.generation):
            record = local  # our last save did not reach the DHT (or is newer than its copy)
        if record is None:
            if pool not in self.known:  # only a hint (its writer unknown here), or none
                self._hints.pop(pool, None)  # and no record behind it: nothing to take over
                self._takeover_misses.pop(pool, None)
                return
            self._retry_take_over(pool, "no record in the DHT yet")
            return
        tomb = self.tombs.get(pool)
        if (
            record.state in ("terminated", "failed")
            or pool in self.shepherding
            or (tomb is not None and tomb.covers(record.generation))
        ):
            self._takeover_misses.pop(pool, None)
            self._hints.pop(pool, None)
            return
        if tomb is not None:
            # Above the tombstone: a resubmission, whose record must carry an operator
            # signature made after the termination (an old, public envelope revives nothing).
            refused = self.resurrection_refusal(pool, record.generation, record.signature)
            if refused is not None:
                self._retry_take_over(pool, refused)
                return
        if self.shepherd_for(pool) != self.name or self.leaving or not self.has_quorum():
            return
        try:
            spec = await self.spec(record.digest, pool)
            await tree_of(spec)
        except PoolError as error:
            self._retry_take_over(pool, str(error))
            return
        if self.shepherd_for(pool) != self.name or self.leaving or not self.has_quorum():
            return  # the view changed while the descriptor was read and resolved
        self._takeover_misses.pop(pool, None)
        tomb = self.tombs.get(pool)
        if tomb is not None and not tomb.covers(record.generation):
            del self.tombs[pool]  # a resubmission: the tombstone is the old pool's
        # Above what a host fenced us with, even when the DHT has not shown that record yet.
        generation = max(record.generation, self._takeover_floor.pop(pool, 0)) + 1
        await self._shepherd(spec, generation, record)
        log.info("pool %s: took over as shepherd at generation %d", pool, generation)
