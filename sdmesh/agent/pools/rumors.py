"""Pool and termination rumors: what this agent knows of every pool from gossip, and
the tombstones that end pools on every host (after a grace, so the shepherd's ordered
termination goes first)."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import msgpack

from sdmesh.agent.pools.common import TOMBSTONE_GRACE, TOPIC_POOL, TOPIC_TOMB, KnownPool
from sdmesh.agent.pools.state import PoolState
from sdmesh.pools import host as hc
from sdmesh.pools.authz import GENERATION
from sdmesh.pools.generations import TERMINATE_STEP as STEP
from sdmesh.pools.generations import generation_refusal
from sdmesh.pools.records import RecordFormatError, Tomb, checked_rumor_ids

log = logging.getLogger(__name__)

#: How often the pools shepherded here are announced again: well within the rumor TTL (a
#: day), so a live pool's rumor never expires.
ANNOUNCE_PERIOD = 4 * 3600.0


#: Within one generation a pool only moves forward through these states.
STATE_ORDER: Final = {"deploying": 0, "running": 1, "terminating": 2, "terminated": 3, "failed": 3}


def rumor_is_older(heard: KnownPool, held: KnownPool) -> bool:
    """Whether a pool rumor says less than what this host knows: a lower generation, or the
    same generation and an earlier state (deploying < running < terminating < terminated or
    failed). A resubmission always starts at a higher generation, so it is never older."""
    if heard.generation != held.generation:
        return heard.generation < held.generation
    return STATE_ORDER.get(heard.state, -1) < STATE_ORDER.get(held.state, -1)


class RumorFollower(PoolState):
    """Gossip about pools: heard (``_on_rumor``) and told (``announce``)."""

    def _on_rumor(self, rumor: Any) -> None:
        if rumor.topic not in (TOPIC_POOL, TOPIC_TOMB):
            return
        try:
            body = msgpack.unpackb(rumor.payload, raw=False)
        except Exception as error:  # msgpack raises several unrelated types
            log.debug("undecodable %s rumor for %s: %s", rumor.topic, rumor.key, error)
            return
        if not isinstance(body, dict):
            log.debug("malformed %s rumor for %s: %r", rumor.topic, rumor.key, body)
            return
        try:
            checked_rumor_ids(rumor.key, body)  # names that reach files, logs and events
        except RecordFormatError as error:
            log.debug("refused %s rumor: %s", rumor.topic, error)
            return
        if self.rumor_refused(rumor, body):  # identities on: its writer's proof
            return
        if rumor.topic == TOPIC_POOL:
            generation = body.get("generation", 0)
            problem = generation_refusal(generation)
            newest = self.newest_generation(rumor.key)
            # Gossip is unsigned: a rumor far above what this host knows would raise the bound
            # terminations are checked against, and poison the name for the next submission
            # (its generation out of range). Records carry the rest.
            if problem is None and isinstance(generation, int) and generation > newest + STEP:
                problem = f"generation {generation} is far above the newest known ({newest})"
            if problem is not None:
                self.refusals.refuse(GENERATION, f"pool {rumor.key} rumor: {problem}")
                return
            known = KnownPool(
                str(body.get("digest", "")),
                str(body.get("state", "")),
                str(body.get("shepherd", "")),
                time.monotonic(),
                int(generation),
            )
            held = self.known.get(rumor.key)
            if held is not None and rumor_is_older(known, held):
                # A replay (an old genuine rumor republished with a fresh Lamport time) must
                # not bring a pool back in this host's view: "already exists" on submit.
                log.debug("pool %s: a rumor older than what is known: ignored", rumor.key)
                return
            self.known[rumor.key] = known
            tomb = self.tombs.get(rumor.key)
            if (
                tomb is not None
                and tomb.superseded_by(known.state, known.generation)
                and self.lifts_tombstone(rumor.key, body)  # identities on: its shepherd's
            ):
                log.info(
                    "pool %s: submitted again (generation %d) after its termination",
                    rumor.key,
                    known.generation,
                )
                del self.tombs[rumor.key]
            self._view_changed()
        else:
            known_gen = self.known[rumor.key].generation if rumor.key in self.known else 0
            covered = Tomb.generation_of(body, known_gen)
            if self.terminate_refusal(rumor.key, covered, body.get("sig", b"")) is not None:
                return
            self._heard_tomb(rumor.key, covered)

    def _heard_tomb(self, pool: str, generation: int) -> bool:
        """A termination record: applied unless a resubmission is known to be newer (an
        old tombstone heard late must not end the new pool of the same name). Whether it
        was applied now."""
        old = self.tombs.get(pool)
        if old is not None and old.generation >= generation:
            return False
        tomb = Tomb(generation, time.monotonic())
        known = self.known.get(pool)
        if known is not None and tomb.superseded_by(known.state, known.generation):
            log.info("pool %s: a termination older than its resubmission: ignored", pool)
            return False
        self.tombs[pool] = tomb
        self._tombstone(pool, tomb)
        return True

    def _tombstone(self, pool: str, tomb: Tomb) -> None:
        """Terminate through the shepherd if we are it (and run no generation above the
        tombstone's: it does not cover that); hosts tear down after a grace."""
        from sdmesh.pools import shepherd as sc

        run = self.shepherding.get(pool)
        if run is not None and tomb.covers(run.core.generation):
            self._feed(pool, sc.TerminateRequested("terminated on request"))
        self._loop.call_later(TOMBSTONE_GRACE, self._tomb_due, pool, tomb)

    def _tomb_due(self, pool: str, tomb: Tomb) -> None:
        if self.tombs.get(pool) is tomb:  # not superseded by a resubmission meanwhile
            self._host_feed(hc.PoolTerminated(pool, tomb.generation))

    def announce(self) -> None:
        """Publish the rumor of every live pool shepherded here again: a rumor lives a day,
        and a pool whose rumor expired is neither taken over nor safe from the reaper."""
        for pool, run in list(self.shepherding.items()):
            said = run.core.announcement()
            if said is not None:
                self._publish(
                    TOPIC_POOL,
                    pool,
                    {
                        "digest": run.core.digest,
                        "state": said.state,
                        "shepherd": self.name,
                        "generation": run.core.generation,
                    },
                )
