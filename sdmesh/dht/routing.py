"""The ``kademlia`` routing table with failure-counted eviction and exact neighbour lists.

Subclasses :class:`kademlia.routing.RoutingTable`; each override says why the stock method
is not kept.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from kademlia.node import Node
from kademlia.routing import KBucket, RoutingTable

from sdmesh.dht.eviction import FailureCounter


class HardenedRoutingTable(RoutingTable):  # type: ignore[misc]  # kademlia is untyped
    """K-buckets whose contacts survive a lost reply and are replaced only by better ones."""

    def __init__(self, protocol: Any, ksize: int, node: Node, failures: FailureCounter) -> None:
        super().__init__(protocol, ksize, node)
        self.failures = failures
        self.evictions = 0

    def get_bucket_for(self, node: Node) -> int:
        """Why we override this: bucket ranges are inclusive (``KBucket.split`` puts the
        midpoint in the lower half, ``has_in_range`` uses ``<=``), but the stock lookup uses
        ``<``, so an id equal to a bucket's upper bound was looked up in the wrong bucket."""
        for index, bucket in enumerate(self.buckets):
            if node.long_id <= bucket.range[1]:
                return index
        return len(self.buckets) - 1

    def find_neighbors(
        self,
        node: Node,
        k: int | None = None,
        exclude: Node | None = None,
        *,
        include_stale: bool = True,
    ) -> list[Node]:
        """The ``k`` known contacts closest to ``node`` by XOR distance.

        Why we override this: the stock ``TableTraverser`` walks buckets outward by numeric
        range and stops after ``k`` contacts, but adjacent ranges are not the XOR-nearest, so
        it could miss closer contacts in later buckets (and handover, lookups and answers
        all depend on this list being the true k closest). With ``include_stale=False``,
        stale contacts (see ``eviction.py``) are left out: they are kept in the table until
        replaced, but not offered to lookups or to other nodes.
        """
        count = k or self.ksize
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        now = time.monotonic()
        candidates = (
            contact
            for bucket in self.buckets
            for contact in bucket.nodes.values()
            if contact.id != node.id
            and (exclude is None or not contact.same_home_as(exclude))
            and (include_stale or not self.failures.is_stale(contact.id, now))
        )
        target = node.long_id
        return heapq.nsmallest(count, candidates, key=lambda contact: contact.long_id ^ target)

    def is_new_node(self, node: Node) -> bool:
        """Why we override this: the stock check ignores the replacement cache, so a node
        waiting there was "new" on every message and got every handover again each time."""
        bucket = self.buckets[self.get_bucket_for(node)]
        return node.id not in bucket.nodes and node.id not in bucket.replacement_nodes

    def add_contact(self, node: Node) -> None:
        """Why we override this: in a full bucket, a contact that already failed
        ``threshold`` times in a row gives its place to the newcomer at once, instead of
        waiting for the ping the stock code sends to the bucket's head."""
        bucket = self.buckets[self.get_bucket_for(node)]
        limit = self.failures.threshold
        if node.id not in bucket.nodes and len(bucket) >= self.ksize:
            stale = next(
                (c for c in bucket.nodes.values() if self.failures.failures(c.id) >= limit), None
            )
            if stale is not None:
                del bucket.nodes[stale.id]
                self.failures.forget(stale.id)
                self.evictions += 1
        super().add_contact(node)

    def contact_failed(self, node: Node) -> bool:
        """Count a failed request to ``node``; evict it only after ``threshold`` consecutive
        failures and only if a replacement is waiting (the stock protocol removes a contact
        on its first failure). Returns whether it was evicted."""
        failures = self.failures.failed(node.id, time.monotonic())
        bucket = self.buckets[self.get_bucket_for(node)]
        if node.id not in bucket.nodes:
            if failures >= self.failures.threshold:
                bucket.replacement_nodes.pop(node.id, None)  # not a replacement worth having
            return False
        if not self.failures.should_evict(node.id, has_replacement=bool(bucket.replacement_nodes)):
            return False
        bucket.remove_node(node)  # promotes the most recently seen replacement
        self.failures.forget(node.id)
        self.evictions += 1
        return True

    def is_stale(self, node_id: bytes) -> bool:
        return self.failures.is_stale(node_id, time.monotonic())

    def contacts(self) -> list[Node]:
        return [contact for bucket in self.buckets for contact in bucket.nodes.values()]

    def stale_buckets(self, max_age: float) -> list[KBucket]:
        """Buckets with no lookup in their range for ``max_age`` seconds (the stock
        ``lonely_buckets`` hard-codes an hour)."""
        cutoff = time.monotonic() - max_age
        return [bucket for bucket in self.buckets if bucket.last_updated < cutoff]
