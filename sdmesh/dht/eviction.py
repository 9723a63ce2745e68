"""When a routing-table contact is dropped: after N consecutive failures, and only for a better one.

The stock ``KademliaProtocol`` removes a contact the first time one request to it times out,
so a single lost datagram (or a busy peer) throws away a good contact. The paper (section 4.1)
keeps unresponsive contacts until a replacement is available, since long-lived nodes are the
most likely to stay; S/Kademlia evicts only after several failures. Both rules live here.

A contact that failed N times in a row is *stale*: still kept while nothing replaces it, but
not offered to lookups, for ``retry_after`` seconds since its last failure; then one request
may probe it again (and a failed probe makes it stale for another period). Any message from
it clears the record at once.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_MAX_FAILURES = 3
DEFAULT_RETRY_AFTER = 30.0


class FailureCounter:
    """Consecutive failures per node id; a success forgets them. Bounded like an LRU cache.

    Time is passed in (``now``, monotonic seconds) so the rules are deterministic to test.
    """

    def __init__(
        self,
        threshold: int = DEFAULT_MAX_FAILURES,
        *,
        retry_after: float = DEFAULT_RETRY_AFTER,
        max_tracked: int = 4096,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.retry_after = retry_after
        self._max = max_tracked
        self._failures: OrderedDict[bytes, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def failed(self, node_id: bytes, now: float) -> int:
        """Count one more failure; returns the number of consecutive failures now."""
        count = self._failures.pop(node_id, (0, now))[0] + 1
        self._failures[node_id] = (count, now)
        if len(self._failures) > self._max:
            self._failures.popitem(last=False)
        return count

    def succeeded(self, node_id: bytes) -> None:
        self._failures.pop(node_id, None)

    def failures(self, node_id: bytes) -> int:
        return self._failures.get(node_id, (0, 0.0))[0]

    def is_stale(self, node_id: bytes, now: float) -> bool:
        """Failed N times in a row, the last time less than ``retry_after`` ago."""
        count, last = self._failures.get(node_id, (0, 0.0))
        return count >= self.threshold and now - last < self.retry_after

    def should_evict(self, node_id: bytes, *, has_replacement: bool) -> bool:
        """Replace a contact only once it failed N times in a row and a replacement waits."""
        return has_replacement and self.failures(node_id) >= self.threshold

    def forget(self, node_id: bytes) -> None:
        self._failures.pop(node_id, None)
