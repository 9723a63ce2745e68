"""The pool operations the API calls: submit, dry run, status, list and terminate."""

from __future__ import annotations

import contextlib
import logging
import time

from sdmesh.agent.pools.common import (
    RPC_TIMEOUT,
    TOPIC_POOL,
    TOPIC_TOMB,
    KnownPool,
    PoolError,
    domain_name,
)
from sdmesh.agent.pools.state import PoolState
from sdmesh.agent.pools.trees import spec_tree, tree_of
from sdmesh.pools.records import PoolRecord, PoolSpec, check_pool_id
from sdmesh.transport import StreamError

log = logging.getLogger(__name__)


class PoolOperations(PoolState):
    """The API's requests about pools."""

    async def submit(self, spec: PoolSpec, signature: bytes = b"") -> dict[str, object]:
        """Store the spec and hand the pool to its shepherd (which may be us), with the
        operator's ``signature`` envelope, which travels in its record and every order."""
        from sdmesh.pools.layout import LayoutError, layout

        try:
            layout(await tree_of(spec))
        except LayoutError as error:
            raise PoolError(str(error)) from None
        if self.leaving:
            raise PoolError("this agent is leaving the mesh: submit through another one", 503)
        if not self.has_quorum():
            raise PoolError(
                "this agent sees no majority of the mesh (a partition?): it cannot start "
                "pools until it does",
                503,
            )
        if spec.pool in self.known and self.known[spec.pool].state not in ("terminated", "failed"):
            raise PoolError(f"pool {spec.pool} already exists", 409)
        existing = await self.read_record(spec.pool)
        if existing is not None and existing.state not in ("terminated", "failed"):
            raise PoolError(f"pool {spec.pool} already exists", 409)
        # Above whatever the name's earlier pool reached, so its tombstone (which ends what
        # was ordered up to its generation) does not end this one anywhere.
        earlier = [
            existing.generation if existing is not None else 0,
            self.tombs[spec.pool].generation if spec.pool in self.tombs else 0,
            self.known[spec.pool].generation if spec.pool in self.known else 0,
        ]
        generation = max(earlier) + 1
        if self.resurrection_refusal(spec.pool, generation, signature) is not None:
            raise PoolError(
                f"pool {spec.pool} was terminated; submitting it again needs an operator "
                "signature made after its termination (sign it again: sdmesh submit --key)",
                403,
            )
        await self.store_spec(spec)
        shepherd = self.shepherd_for(spec.pool) or self.name
        self._publish(
            TOPIC_POOL,
            spec.pool,
            {
                "digest": spec.digest,
                "state": "deploying",
                "shepherd": shepherd,
                "generation": generation,
            },
        )
        self.known[spec.pool] = KnownPool(
            spec.digest, "deploying", shepherd, time.monotonic(), generation
        )
        self.tombs.pop(spec.pool, None)
        if shepherd == self.name:
            await self._shepherd(spec, generation, None, signature=signature)
        else:
            addr = self._address(shepherd)
            reply: object = None
            if addr is not None:
                with contextlib.suppress(StreamError, OSError):
                    reply = await self.client.request(
                        addr,
                        {
                            "rpc": "submit",
                            "from": self.name,
                            "spec": spec.encode(),
                            "generation": generation,
                            "signature": signature,
                        },
                        timeout=RPC_TIMEOUT,
                    )
            if not (isinstance(reply, dict) and reply.get("ok")):
                # Stored and announced: whoever shepherds it next takes it over from the
                # record (e.g. the shepherd was leaving and its successor will).
                log.warning(
                    "pool %s: its shepherd %s did not take it now: %s", spec.pool, shepherd, reply
                )
                with contextlib.suppress(Exception):
                    stored = await self.read_record(spec.pool)
                    if stored is None or stored.generation < generation:
                        await self.write_record(
                            PoolRecord(
                                spec.pool, spec.digest, generation, shepherd, signature=signature
                            )
                        )
        return {"pool": spec.pool, "shepherd": shepherd, "digest": spec.digest}

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        from sdmesh.pools.layout import LayoutError, layout
        from sdmesh.pools.placement import place

        try:
            cut = layout(spec_tree(spec))
        except LayoutError as error:
            raise PoolError(str(error)) from None
        plan = place(cut.demands(), self.offers())
        return {
            "pool": spec.pool,
            "shepherd": self.shepherd_for(spec.pool) or self.name,
            "placement": [
                {
                    "path": unit.path,
                    "host": plan.assignments.get(unit.path),
                    "vcpus": unit.demand.vcpus,
                    "memory_mib": unit.demand.memory_mib,
                    "disk_mib": unit.demand.disk_mib,
                }
                for unit in cut.units.values()
            ],
            "unplaced": [{"path": u.path, "reason": u.reason} for u in plan.unplaced],
        }

    def local_status(self, pool: str) -> dict[str, object] | None:
        run = self.shepherding.get(pool) or self._finished_runs.get(pool)
        if run is None:
            return None
        core = run.core
        components = core.components()
        for item in components:
            path = str(item["path"])
            item["domain"] = domain_name(pool, path, path in core.layout.units)
        return {
            "pool": pool,
            "state": core.state,
            "reason": core.reason,
            "shepherd": self.name,
            "generation": core.generation,
            "components": components,
        }

    async def status(self, pool: str) -> dict[str, object]:
        _check_pool_id(pool)
        local = self.local_status(pool)
        if local is not None:
            return local
        shepherd = self.shepherd_for(pool)
        if shepherd and shepherd != self.name:
            addr = self._address(shepherd)
            if addr is not None:
                with contextlib.suppress(StreamError, OSError):
                    reply = await self.client.request(
                        addr, {"rpc": "status", "pool": pool}, timeout=RPC_TIMEOUT
                    )
                    if isinstance(reply, dict) and reply.get("pool") == pool:
                        return reply
        local = self.local_status(pool)  # we may have become its shepherd while we waited
        if local is not None:
            return local
        record = await self.read_record(pool)
        if record is None:
            raise PoolError(f"unknown pool {pool!r}", 404)
        state = "terminated" if pool in self.tombs else record.state
        return {
            "pool": pool,
            "state": state,
            "reason": record.reason,
            "shepherd": record.shepherd,
            "generation": record.generation,
            "components": [
                {"path": unit, "kind": "", "host": host, "state": "unknown", "domain": ""}
                for unit, host in record.placement.items()
            ],
        }

    def pools(self) -> list[dict[str, object]]:
        names = set(self.known) | set(self.shepherding) | set(self.tombs)
        out: list[dict[str, object]] = []
        for pool in sorted(names):
            known = self.known.get(pool)
            run = self.shepherding.get(pool)
            state = run.core.state if run else (known.state if known else "unknown")
            if pool in self.tombs and state not in ("terminated", "failed"):
                state = "terminating"
            out.append(
                {
                    "pool": pool,
                    "state": state,
                    "shepherd": self.shepherd_for(pool) or "",
                }
            )
        return out

    async def termination_floor(self, pool: str) -> int:
        """The newest generation of ``pool`` known here, record included: what a
        termination must cover (400 for a bad id, 404 for a pool nobody knows)."""
        _check_pool_id(pool)
        record = await self.read_record(pool, newest=True)
        if pool not in self.known and pool not in self.tombs and record is None:
            raise PoolError(f"unknown pool {pool!r}", 404)
        return max(
            record.generation if record is not None else 0,
            self.newest_generation(pool),
        )

    async def terminate(
        self, pool: str, signature: bytes = b"", newest: int | None = None
    ) -> dict[str, object]:
        """Ask the shepherd, then publish the termination record; idempotent.

        ``signature``: the operator's termination signature the API checked (or made for the
        caller it authorized: sdmesh.trust.termination.api_termination); the tombstone then
        ends the pool up to the generation it signs, and carries it as is. Without one (an
        agent with no trust store), up to the newest generation known (``newest``, else
        looked up), which the shepherd raises to its own.

        PoolError 403 for what this host would refuse from the mesh (its trust store is read
        again: a key revoked meanwhile) or what the shepherd refuses, 409 when the shepherd
        runs a generation above the signed one (nothing ended: sign again); an unreachable
        shepherd is no error (the tombstone reaches it as gossip), the answer's ``detail``
        says so."""
        if newest is None:
            newest = await self.termination_floor(pool)
        _check_pool_id(pool)
        generation = newest
        if signature:
            from sdmesh.trust.termination import TerminationFormatError, signed_generation

            try:
                generation = signed_generation(signature)
            except TerminationFormatError as error:
                raise PoolError(str(error)) from None
        if self.termination_check is not None:
            refused = self.terminate_refusal(pool, generation, signature, newest)
            if refused is not None:
                raise PoolError(refused, 403)
        known = self.newest_generation(pool)
        if signature and known > generation:  # before anything is asked, applied or published
            raise PoolError(
                f"pool {pool} is at generation {known} here, above the {generation} this "
                "termination covers (taken over or moved since): nothing ended; sign and send "
                "it again",
                409,
            )
        shepherd = self.shepherd_for(pool)
        answer: dict[str, object] = {
            "pool": pool,
            "state": "terminating",
            "shepherd": shepherd or "",
        }
        if shepherd and shepherd != self.name:
            detail = await self._ask_to_terminate(shepherd, pool, generation, signature)
            if detail:
                answer["detail"] = detail
        not_ended = self._terminate_here(pool, generation, signature)
        if not_ended is not None:
            raise PoolError(not_ended, 409)
        return answer

    async def _ask_to_terminate(
        self, shepherd: str, pool: str, generation: int, signature: bytes
    ) -> str:
        """The ``terminate`` RPC to ``pool``'s shepherd: "" when it took it, a note when it
        could not be asked; PoolError (403, or 409 for a run above ``generation``) with its
        reason when it refused."""
        addr = self._address(shepherd)
        reply: object = None
        if addr is not None:
            with contextlib.suppress(StreamError, OSError):
                reply = await self.client.request(
                    addr,
                    {
                        "rpc": "terminate",
                        "pool": pool,
                        "generation": generation,
                        "signature": signature,
                    },
                    timeout=RPC_TIMEOUT,
                )
        if isinstance(reply, dict) and reply.get("ok") is True:
            return ""
        if isinstance(reply, dict) and reply.get("ok") is False:
            status = 409 if reply.get("conflict") is True else 403
            why = mesh_text(reply.get("error"))
            raise PoolError(f"pool {pool}: its shepherd {shepherd} refused: {why}", status)
        return (
            f"its shepherd {shepherd} did not answer: the termination reaches it as gossip "
            "(follow it with sdmesh terminate --wait or sdmesh status)"
        )

    def _terminate_here(self, pool: str, generation: int, signature: bytes = b"") -> str | None:
        """Publish (and apply) the pool's tombstone, carrying the operator's ``signature``
        as received. Unsigned (no trust store), as its shepherd, over the generation it runs
        at, which a takeover may have raised past what the requester knew; signed, at the
        generation signed (which leaves room for takeovers: sdmesh.trust.termination.SLACK),
        and a run above it is not ended (the signature does not cover it): then why (the
        API's and the RPC's 409), else None."""
        run = self.shepherding.get(pool)
        if run is not None and not signature:
            generation = max(generation, run.core.generation)
        covered = run is not None and run.core.generation <= generation
        if run is not None and not covered:  # before anything is applied or published
            return (
                f"pool {pool}: its shepherd {self.name} runs generation {run.core.generation}, "
                f"above the {generation} this termination covers (taken over or moved since): "
                "nothing ended; sign and send it again"
            )
        old = self.tombs.get(pool)
        if old is None or old.generation < generation:
            self._heard_tomb(pool, generation)  # before our own rumor comes back
            self._publish(TOPIC_TOMB, pool, self.tomb_body(pool, generation, signature))
        tomb = self.tombs.get(pool)
        ignored = tomb is None or tomb.generation < generation  # a rumor looked newer
        if ignored and covered and pool in self.shepherding:  # asked: end it
            from sdmesh.pools import shepherd as sc

            self._feed(pool, sc.TerminateRequested("terminated on request"))
        return None


def mesh_text(value: object, most: int = 300) -> str:
    """A reason another member sent, fit for an answer and a log line: printable, bounded
    (a member is not trusted to send either)."""
    if not isinstance(value, str) or not value.isprintable():
        return "no reason given"
    return value if len(value) <= most else value[:most] + "..."


def _check_pool_id(pool: str) -> None:
    """A 400 naming the rule for an id that cannot be a pool's (a trailing newline, a slash),
    before it reaches a lookup, a file name or a log line."""
    try:
        check_pool_id(pool)
    except ValueError as error:
        raise PoolError(str(error), 400) from None
