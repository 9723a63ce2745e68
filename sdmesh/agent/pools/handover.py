"""Leaving the mesh: hand every pool this agent shepherds to its successor (with the
host's own holdings vouched for), and adopt the pools a leaving member hands to us."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sdmesh.agent.pools.common import KnownPool, PoolError
from sdmesh.agent.pools.state import PoolState
from sdmesh.agent.pools.trees import tree_of
from sdmesh.membership import State
from sdmesh.pools import host as hc
from sdmesh.pools.ownership import shepherd_candidates, successors
from sdmesh.pools.records import PoolRecord, PoolSpec, RecordFormatError, checked_ids
from sdmesh.transport import StreamError

log = logging.getLogger(__name__)

#: A leaving agent waits this long at most for its host's leaf operations under way (what it
#: vouches for must be settled), then this long for successors to confirm its hand-overs.
LEAVE_DRAIN = 4.0
HANDOVER_TIMEOUT = 6.0
#: One successor's share of it: one that does not answer must leave time for the next.
HANDOVER_ATTEMPT = HANDOVER_TIMEOUT / 3
#: A member that handed its pools to us counts as gone this long, until its leave shows.
DEPARTING_TTL = 30.0
#: Specs per hand-over request, by size (a request is one stream frame).
HANDOVER_BATCH_BYTES = 4 * 1024 * 1024


class HandOver(PoolState):
    """Hand-over of pools between a leaving agent and its successors."""

    async def leave(self) -> dict[str, str]:
        """Run before the agent announces its leave (``sdmesh leave``, SIGTERM): admit no
        new unit, let this host's leaf operations under way finish, hand every pool this
        agent shepherds to its successor, deliver the last reports. Bounded: a pool whose
        hand-over nobody confirms is taken over from its saved record once the leave shows.

        The host's own VMs stay and keep running: a leave is not a drain. Shepherds keep
        them placed here for ``AWAY_GRACE`` (a restart or an upgrade of the agent), then
        treat them as lost, as after a death. Returns pool -> the successor that took it
        ("" when none confirmed)."""
        self.leaving = True
        self._host_feed(hc.Leaving())
        deadline = self._loop.time() + LEAVE_DRAIN
        while self.host.busy() and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
        handed = await self._hand_over_all()
        if self._report_task is not None and not self._report_task.done():
            await asyncio.wait({self._report_task}, timeout=1.0)
        return handed

    async def _hand_over_all(self) -> dict[str, str]:
        from sdmesh.pools import shepherd as sc

        live = self.live_members()  # without us: we are leaving
        members = shepherd_candidates((m.name, m.meta) for m in live)  # never a witness
        suspects = [m.name for m in live if m.state is not State.ALIVE]
        handed: dict[str, tuple[PoolRecord, list[str]]] = {}
        for pool, run in list(self.shepherding.items()):
            if run.core.ended:
                continue
            candidates = successors(pool, members, self.name, suspects)
            actions = run.core.handle(
                sc.HandOver(candidates[0] if candidates else ""), self._loop.time()
            )
            self._stop_shepherding(pool)  # before anything can answer it: it must stay quiet
            for action in actions:
                if isinstance(action, sc.HandOff):
                    handed[pool] = (action.record, candidates)
        if not handed:
            return {}
        outcome = dict.fromkeys(handed, "")
        # The freshest records go to the DHT too: if no successor confirms, whoever takes a
        # pool over once our leave shows starts from there.
        saving = self._spawn(self._write_records([record for record, _ in handed.values()]))
        deadline = self._loop.time() + HANDOVER_TIMEOUT
        pending = dict(handed)
        for attempt in range(3):  # the successor, then the next ones if it cannot take them
            batches: dict[str, list[PoolRecord]] = defaultdict(list)
            for record, candidates in pending.values():
                if attempt < len(candidates):
                    batches[candidates[attempt]].append(record)
            if not batches or self._loop.time() >= deadline:
                break
            # Each attempt gets its share: a successor that does not answer must not use up
            # the time the next one needs.
            step = min(deadline, self._loop.time() + HANDOVER_ATTEMPT)
            results = await asyncio.gather(
                *(self._offer(target, records, step) for target, records in batches.items())
            )
            for target, taken in zip(batches, results, strict=True):
                for pool, generation in taken.items():
                    if pending.pop(pool, None) is not None:
                        outcome[pool] = target
                        log.info(
                            "pool %s: handed over to %s (generation %d)", pool, target, generation
                        )
        for pool in pending:
            log.warning(
                "pool %s: no successor confirmed the hand-over; it will be taken over from its "
                "saved record once this agent's leave is seen",
                pool,
            )
        await asyncio.wait({saving}, timeout=max(0.1, deadline - self._loop.time()))
        return outcome

    async def _write_records(self, records: list[PoolRecord]) -> None:
        await asyncio.gather(*(self.write_record(record) for record in records))

    async def _offer(
        self, target: str, records: list[PoolRecord], deadline: float
    ) -> dict[str, int]:
        """Ask ``target`` to take these pools over; the pools it confirms -> its generation."""
        addr = self._address(target)
        if addr is None:
            return {}
        items: list[tuple[int, dict[str, object]]] = []
        for record in records:
            try:  # bounded: a DHT read must not hold the leave past systemd's stop timeout
                left = max(0.01, deadline - self._loop.time())
                spec = await asyncio.wait_for(self.spec(record.digest, record.pool), left)
            except (PoolError, TimeoutError):
                continue  # the successor reads it from the DHT record when it takes over
            data = spec.encode()
            leaves = self.host.holdings(spec.pool)
            items.append((len(data), {"spec": data, "record": record.encode(), "leaves": leaves}))
        taken: dict[str, int] = {}
        batch: list[dict[str, object]] = []
        size = 0
        for length, item in items:
            if batch and size + length > HANDOVER_BATCH_BYTES:
                taken.update(await self._offer_batch(addr, batch, deadline))
                batch, size = [], 0
            batch.append(item)
            size += length
        if batch:
            taken.update(await self._offer_batch(addr, batch, deadline))
        return taken

    async def _offer_batch(
        self, addr: tuple[str, int], items: list[dict[str, object]], deadline: float
    ) -> dict[str, int]:
        timeout = deadline - self._loop.time()
        if timeout <= 0:
            return {}
        request = {"rpc": "handover", "from": self.name, "pools": items}
        try:
            reply = await self.client.request(addr, request, timeout=timeout)
        except (StreamError, OSError) as error:
            log.debug("hand-over to %s failed: %s", addr, error)
            return {}
        taken = reply.get("taken") if isinstance(reply, dict) else None
        if not isinstance(taken, dict):
            log.info("hand-over refused: %s", reply)
            return {}
        return {str(k): int(v) for k, v in taken.items() if isinstance(v, int)}

    async def _adopt(self, request: Mapping[str, Any]) -> dict[str, object]:
        """A leaving shepherd hands us its pools: take each over at a higher generation than
        the record it sends (its freshest state), trusting what its host says it runs."""
        sender = str(request.get("from", ""))
        if self.leaving or not self.has_quorum() or not sender or sender == self.name:
            return {"error": f"{self.name} cannot take pools over now"}
        self.departing[sender] = time.monotonic() + DEPARTING_TTL
        self._loop.call_later(DEPARTING_TTL, self._view_changed)
        taken: dict[str, int] = {}
        for item in request.get("pools", []):
            try:  # one bad item must not undo the others (they are adopted already)
                spec = PoolSpec.decode(item["spec"])
                record = PoolRecord.decode(item["record"])
                leaves = item.get("leaves") or {}
            except (RecordFormatError, KeyError, TypeError) as error:
                log.warning("hand-over from %s: a malformed pool: %s", sender, error)
                continue
            if spec.pool != record.pool or spec.digest != record.digest:
                continue
            if self.adoption_refusal(spec.pool, sender) is not None:
                continue
            if not isinstance(leaves, dict) or record.state in ("terminated", "failed"):
                continue
            self._specs[spec.digest] = spec
            if spec.pool not in self.shepherding:
                try:
                    await tree_of(spec)  # off the loop; _shepherd finds it resolved
                except PoolError as error:
                    log.warning("hand-over from %s: %s", sender, error)
                    continue
                local = await self._local_record(spec.pool)
                base = (
                    local if local is not None and local.generation > record.generation else record
                )
                try:
                    checked_ids(paths=tuple(leaves))  # they go into the record others decode
                except RecordFormatError as error:
                    log.warning("hand-over from %s: %s", sender, error)
                    continue
                vouched = {
                    str(k): str(v) for k, v in leaves.items() if v in ("deployed", "running")
                }
                self.known[spec.pool] = KnownPool(
                    spec.digest, base.state, self.name, time.monotonic()
                )
                await self._shepherd(spec, base.generation + 1, base, {sender: vouched})
            run = self.shepherding.get(spec.pool)
            if run is not None:
                taken[spec.pool] = run.core.generation
                log.info(
                    "pool %s: %s handed it over; shepherd at generation %d",
                    spec.pool,
                    sender,
                    run.core.generation,
                )
        self._view_changed()
        return {"taken": taken}
