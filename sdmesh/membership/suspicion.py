"""One suspicion: when it started, who independently confirmed it, and when it expires."""

from __future__ import annotations

from sdmesh.membership.config import suspicion_timeout


class Suspicion:
    """A suspicion timer whose deadline moves earlier with each independent confirmation.

    Lifeguard (Dadgar et al. 2018, section 4.2): a member suspected by several others at once
    is more likely really dead than one suspected by a single, possibly unhealthy, prober, so
    the timeout starts long and shrinks as distinct members report the same suspicion.
    """

    __slots__ = ("_confirmers", "_expected", "_high", "_low", "deadline", "start")

    def __init__(self, start: float, low: float, high: float, expected: int, origin: str) -> None:
        self.start = start
        self._low = low
        self._high = high
        self._expected = expected
        self._confirmers = {origin}
        self.deadline = start + suspicion_timeout(low, high, expected, 0)

    @property
    def confirmations(self) -> int:
        """Independent confirmations beyond the first suspicion."""
        return len(self._confirmers) - 1

    def confirm(self, sender: str) -> bool:
        """Count ``sender``'s suspicion; True when it was new and moved the deadline."""
        if self._expected < 1 or sender in self._confirmers:
            return False
        if self.confirmations >= self._expected:
            return False
        self._confirmers.add(sender)
        timeout = suspicion_timeout(self._low, self._high, self._expected, self.confirmations)
        self.deadline = self.start + timeout
        return True
