"""When a member that was live counts as lost for the shepherds: the one place that decides
when a lost host's VMs may be rebuilt elsewhere.

Death verdicts in gossip can be wrong. A cut-off agent declares every peer dead; after the
heal its verdicts spread for a moment before the members they name refute them (a higher
incarnation, usually within a few hundred milliseconds), and a shepherd that moved a unit
off a healthy host on such a verdict had its VM rebuilt elsewhere and the healthy copy
released. So a member that drops out of the live set still counts as live here until it has
stayed out, unrefuted, for ``window`` seconds *while this agent may act* (it sees a
majority): a loss seen without a majority is no evidence (that is what the cut-off side
sees), and its window starts again when the majority is back, so verdicts carried across a
heal are checked against the liveness after it.

The window does not stand for the lease: a confirmed loss only makes the shepherd *start*
reclaiming the host (sdmesh.ha.lease), and its units move once that reclaim says the lease
surely ended. The two waits run in parallel: failover orders go out after
``max(lease wait, failure detection + window)`` (sdmesh.ha.timing).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Longer than a refutation takes to spread (a few gossip rounds), short next to HA's budget.
LOSS_CONFIRM = 2.0


class LossConfirmer:
    """Members lost from the live set, until their loss is confirmed (sans-IO)."""

    def __init__(self, window: float = LOSS_CONFIRM) -> None:
        self.window = window
        #: Lost member -> since when its loss counts (None: seen while this agent could not
        #: act, so its window has not started).
        self._pending: dict[str, float | None] = {}
        self._live: frozenset[str] = frozenset()

    def observe(self, live: Iterable[str], may_act: bool, now: float) -> frozenset[str]:
        """Feed one view: the live members (alive or suspect) and whether the shepherds here
        may act. The members that count as live for them: ``live`` and the lost ones whose
        loss is not confirmed yet."""
        live = frozenset(live)
        for name in self._live - live:
            self._pending.setdefault(name, None)
        for name in live:
            self._pending.pop(name, None)  # refuted, or back
        for name, since in list(self._pending.items()):
            if not may_act:
                self._pending[name] = None
            elif since is None:
                self._pending[name] = now
            elif now - since >= self.window:
                del self._pending[name]  # stayed lost for the whole window: it is
        self._live = live
        return live | frozenset(self._pending)

    def unconfirmed(self) -> frozenset[str]:
        """Members lost too recently to act on (between two views)."""
        return frozenset(self._pending)

    def recheck_at(self) -> float | None:
        """When the earliest pending loss is confirmed, if no view event comes before."""
        ends = [since + self.window for since in self._pending.values() if since is not None]
        return min(ends, default=None)

    def forget(self, name: str) -> None:
        """``name`` left gracefully: a leave is announced, not a verdict to confirm."""
        self._pending.pop(name, None)
