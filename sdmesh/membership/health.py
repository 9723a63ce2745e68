"""Lifeguard's Local Health Multiplier (LHM): how much to distrust our own timing."""

from __future__ import annotations


class LocalHealth:
    """A saturating counter in ``[0, maximum]``.

    Failed probes whose relays did not even nack, and suspicions about ourselves, suggest the
    problem is local (CPU starvation, a lossy NIC); successful probes suggest the opposite.
    Probe interval and timeout are multiplied by ``score + 1``, so an unhealthy node slows
    down and accuses less (Lifeguard, Dadgar et al. 2018, section 4.1).
    """

    __slots__ = ("maximum", "score")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.score = 0

    @property
    def multiplier(self) -> int:
        return self.score + 1

    def apply(self, delta: int) -> None:
        self.score = min(self.maximum, max(0, self.score + delta))
