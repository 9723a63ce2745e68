"""The authorization rules of sdmesh.pools.authz and sdmesh.pools.generations, applied to
what the mesh sends this agent's pool service: orders, reports, inventories, submissions,
hand-overs, terminations and tombstones (issue 12, item 2; docs/security.md)."""

from __future__ import annotations

import time

from sdmesh.agent.pools.view import MembershipView
from sdmesh.pools import authz
from sdmesh.pools.generations import termination_refusal
from sdmesh.pools.records import Order, Report

#: The answer an unauthorized order gets: the shepherd retries it a few times (a view this
#: host has not caught up with yet) before it gives the host up, as for an unreachable one.
UNAUTHORIZED_OUTCOME = "unreachable"
#: Seconds an operator's clock may lag this host's when it signs a pool again right after
#: terminating it (resurrection_refusal).
RESURRECTION_SKEW = 5.0


class MeshAuthz(MembershipView):
    """Checks a request against this host's own view; refusals counted in ``refusals``."""

    def entitled_shepherds(self, pool: str) -> set[str]:
        """Who may order this host for ``pool`` (sdmesh.pools.authz.entitled_shepherds)."""
        members = {m.name for m in self.node.core.live_members()}
        members |= {m.name for m in self.counted_members()}
        return authz.entitled_shepherds(pool, members, self.host.shepherd_of(pool))

    def take_authorized_orders(
        self, orders: list[Order], sent_by: authz.SentBy | None
    ) -> list[list[object]]:
        """``take_orders`` for the orders an entitled shepherd sent; the others answered
        ``UNAUTHORIZED_OUTCOME`` with the reason, counted, and change nothing."""
        answers: list[list[object] | None] = []
        allowed: list[Order] = []
        entitled: dict[str, set[str]] = {}  # per pool, once per batch
        for order in orders:
            if order.pool not in entitled:
                entitled[order.pool] = self.entitled_shepherds(order.pool)
            refusal = authz.order_refusal(order.pool, order.shepherd, sent_by, entitled[order.pool])
            if refusal is None:
                allowed.append(order)
                answers.append(None)
            else:
                answers.append([UNAUTHORIZED_OUTCOME, self.refusals.refuse(*refusal), 0])
        taken = iter(self.take_orders(allowed) if allowed else [])
        return [answer if answer is not None else next(taken) for answer in answers]

    def reports_from_sender(
        self, reports: list[Report], sent_by: authz.SentBy | None
    ) -> list[Report]:
        """The reports that come from the host they speak for (the others counted)."""
        if sent_by is None:
            return reports
        kept = [report for report in reports if sent_by(report.host)]
        for report in reports:
            if report not in kept:
                self.refusals.refuse(
                    authz.WRONG_SENDER, f"a report for host {report.host} did not come from it"
                )
        return kept

    def sender_refusal(self, name: str, sent_by: authz.SentBy | None, what: str) -> str | None:
        """Why a request speaking for member ``name`` (an inventory, a hand-over) is refused:
        it does not come from that member. Counted."""
        if sent_by is None or sent_by(name):
            return None
        return self.refusals.refuse(authz.WRONG_SENDER, f"{what} for {name} did not come from it")

    def adoption_refusal(self, pool: str, sender: str) -> str | None:
        """Why this host does not take ``pool`` over from ``sender``'s hand-over: either is
        not among the members entitled to shepherd it in this host's view. Counted; the pool
        is then taken over from its record by whoever is its shepherd."""
        entitled = self.entitled_shepherds(pool)
        if sender in entitled and self.name in entitled:
            return None
        message = f"a hand-over of pool {pool} from {sender}: not its shepherd or successor here"
        return self.refusals.refuse(authz.NOT_SHEPHERD, message)

    def resurrection_refusal(self, pool: str, generation: int, signature: bytes) -> str | None:
        """Why a submission or order above ``pool``'s tombstone may not bring it back, or
        None. Envelopes never expire and are public (they ride records and orders), so an old
        one would let anyone holding the cluster key revive a terminated pool: lifting a
        tombstone takes an operator signature made after the termination was heard here
        (within ``RESURRECTION_SKEW`` for clocks). Counted."""
        tomb = self.tombs.get(pool)
        if tomb is None or tomb.covers(generation):
            return None
        from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError

        heard_at = time.time() - (time.monotonic() - tomb.since)
        try:
            signed_at = DescriptorSignature.decode(signature).signed_at if signature else None
        except SignatureFormatError:
            signed_at = None
        if signed_at is not None and signed_at >= heard_at - RESURRECTION_SKEW:
            return None
        return self.refusals.refuse(
            authz.TOMBSTONE,
            f"pool {pool} was terminated; bringing it back needs an operator signature made "
            "after its termination (sign and submit it again)",
        )

    def submit_refusal(self, pool: str) -> str | None:
        """Why this host does not become the shepherd of a submitted ``pool``. Counted."""
        refusal = authz.submit_refusal(pool, self.name, self.shepherd_for(pool))
        return self.refusals.refuse(*refusal) if refusal is not None else None

    def terminate_refusal(
        self, pool: str, generation: object, signature: object = b"", newest: int = 0
    ) -> str | None:
        """Why a termination of ``pool`` up to ``generation`` from the mesh (an RPC, a
        tombstone) or this agent's API is refused, or None. Counted. Never more than
        ``TERMINATE_STEP`` above the newest generation this host knows (or ``newest``, the
        API's floor, which includes the pool's record: sdmesh.pools.generations); with a
        trust store, deny by default: only with an operator's signature for this pool
        covering ``generation`` (sdmesh.trust.termination), whatever the generation."""
        known = max(newest, self.newest_generation(pool))
        problem = termination_refusal(generation, known)
        check = self.termination_check
        if problem is None and check is not None:
            assert isinstance(generation, int)  # termination_refusal checked it
            unsigned = check(signature, pool, generation)
            if unsigned is not None:
                problem = (
                    f"a termination up to generation {generation} without a valid operator "
                    f"signature ({unsigned})"
                )
        if problem is None:
            return None
        return self.refusals.refuse(authz.TOMBSTONE, f"pool {pool}: {problem}")
