"""Live events of one agent: member, pool and component changes, fanned out to followers.

``GET /v1/events`` (and ``sdmesh events``, and the dashboard) follow this hub. Publishing
never blocks and never fails: the agent's protocols call it from their callbacks. Each
follower has a bounded queue; one that reads too slowly loses its oldest events and is told
so with an ``{"type": "overflow", "dropped": n}`` marker in their place, so a stuck client
costs the agent a fixed amount of memory and nothing else. A small ring of recent events lets
a new follower start with some history (``?backlog=N``, ``?since=TIME``, SSE's
``Last-Event-ID``).

Event shapes (shared/spec/cli.md; ``time`` is Unix seconds, added on publication):

* ``{"type": "component", "pool", "path", "kind", "state", "host", "domain"}``: the
  shepherd's view of every component of the pools this agent shepherds, and this host's own
  leaf operations for the pools it does not;
* ``{"type": "member", "name", "address", "state", "previous"}``;
* ``{"type": "pool", "pool", "state", "shepherd", "generation", "reason"}``: from the
  shepherd, and from the gossiped pool rumors on every other agent (``generation`` is
  ``None`` when the rumor does not carry it).

Only the standard library here: the agent imports this module before its heavy parts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdmesh.agent.mesh import MeshNode
    from sdmesh.agent.pools import LeafOp, PoolService
    from sdmesh.membership import MemberEvent, Rumor

log = logging.getLogger(__name__)

Event = dict[str, Any]

#: Recent events kept for new followers.
RECENT_EVENTS = 512
#: Events a follower may fall behind by before it loses the oldest.
QUEUE_EVENTS = 1024
#: Terminated pools whose last state is remembered (to tell a repeated rumor from a change);
#: older ones are forgotten, so a long-lived agent does not keep every pool it ever saw.
KEEP_ENDED_POOLS = 256
#: Pool states after which a pool changes no more.
ENDED_STATES = frozenset({"terminated"})


class Subscription:
    """One follower's bounded queue; iterate it, or ``await next(timeout)`` for heartbeats."""

    def __init__(self, hub: EventHub | None, limit: int) -> None:
        if limit < 1:
            raise ValueError("a subscription must hold at least one event")
        self._hub = hub
        self._limit = limit
        self._queue: deque[tuple[int, Event]] = deque()
        self._dropped = 0
        self._wake = asyncio.Event()
        self.closed = hub is None
        self.last_id = 0
        """Sequence number of the last event handed out (SSE's ``id:``)."""

    def offer(self, seq: int, event: Event) -> None:
        """Queue ``event``; when full, drop the oldest and count it (never blocks)."""
        if self.closed:
            return
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self._dropped += 1
            if self._hub is not None:
                self._hub.dropped += 1
        self._queue.append((seq, event))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event (an overflow marker first if some were lost), ``None`` after
        ``timeout`` seconds without one; raises ``StopAsyncIteration`` once closed and empty."""
        while not self._queue and not self._dropped:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return {"type": "overflow", "dropped": dropped}
        self.last_id, event = self._queue.popleft()
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        assert event is not None  # no timeout: only an event or the end
        return event

    def close(self) -> None:
        """End the stream: what is queued is still handed out, then iteration stops."""
        if not self.closed:
            self.closed = True
            if self._hub is not None:
                self._hub.unsubscribe(self)
        self._wake.set()


class EventHub:
    """Fan-out of the agent's events to any number of followers, with recent history."""

    def __init__(
        self,
        recent: int = RECENT_EVENTS,
        queue: int = QUEUE_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recent: deque[tuple[int, Event]] = deque(maxlen=recent)
        self._queue = queue
        self._clock = clock
        self._ids = itertools.count(1)
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self.published = 0
        self.dropped = 0
        """Events lost by slow followers, all of them together (for /metrics)."""

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Hand ``event`` to every follower; from the event loop's thread only."""
        stamped = dict(event)
        stamped.setdefault("time", round(self._clock(), 3))
        seq = next(self._ids)
        self._recent.append((seq, stamped))
        self.published += 1
        for subscription in list(self._subscribers):
            subscription.offer(seq, stamped)

    def recent(
        self, backlog: int | None = None, since: float | None = None, after: int | None = None
    ) -> list[tuple[int, Event]]:
        """Kept events: the last ``backlog``, those newer than ``since`` (a ``time``) or
        after sequence number ``after``; all three narrow together."""
        found = list(self._recent)
        if after is not None:
            found = [(seq, e) for seq, e in found if seq > after]
        if since is not None:
            found = [(seq, e) for seq, e in found if float(e.get("time", 0)) > since]
        if backlog is not None:
            found = found[-backlog:] if backlog > 0 else []
        return found

    def subscribe(
        self,
        backlog: int | None = None,
        since: float | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Subscription:
        """A new follower, first given the kept events selected as in :meth:`recent` (none
        unless asked). A closed hub gives a subscription that ends at once."""
        if self._closed:
            return Subscription(None, self._queue if limit is None else limit)
        subscription = Subscription(self, self._queue if limit is None else limit)
        if backlog is not None or since is not None or after is not None:
            for seq, event in self.recent(backlog, since, after):
                subscription.offer(seq, event)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every follower's stream (the agent is stopping); later subscriptions end too."""
        self._closed = True
        for subscription in list(self._subscribers):
            subscription.close()


# --------------------------------------------------------------------------- feeding
def member_event(change: MemberEvent) -> Event:
    member = change.member
    return {
        "type": "member",
        "name": member.name,
        "address": f"{member.addr[0]}:{member.addr[1]}",
        "state": change.new_state.value,
        "previous": change.old_state.value if change.old_state is not None else None,
    }


def follow_members(hub: EventHub, node: MeshNode) -> None:
    """Member state changes (metadata-only updates are not events: capacity moves often)."""

    def changed(change: MemberEvent) -> None:
        if change.old_state is not change.new_state:
            hub.publish(member_event(change))

    node.listeners.append(changed)


class _PoolFeed:
    """Pool and component events from the pool service, whichever way they reach us.

    The shepherd says a pool changed twice (its own report, and the rumor it publishes, which
    its own rumor map takes too), and everyone else learns it from the rumor only: one event
    per actual change, whatever the source.
    """

    def __init__(self, hub: EventHub, pools: PoolService) -> None:
        self.hub = hub
        self.pools = pools
        self.seen: dict[str, tuple[str, str, int | None]] = {}
        """Per pool: the last state, shepherd and generation told."""
        self._ended: dict[str, None] = {}
        """Pools in ``seen`` that ended, oldest first (at most ``KEEP_ENDED_POOLS``)."""

    def remember(self, pool: str, entry: tuple[str, str, int | None]) -> None:
        """Record ``entry`` as ``pool``'s last state; forget the oldest ended pools."""
        self.seen[pool] = entry
        self._ended.pop(pool, None)  # a pool id can be used again
        if entry[0] in ENDED_STATES:
            self._ended[pool] = None
            while len(self._ended) > KEEP_ENDED_POOLS:
                oldest = next(iter(self._ended))
                del self._ended[oldest]
                self.seen.pop(oldest, None)

    def pool(self, pool: str, state: str, shepherd: str, generation: object, reason: str) -> None:
        last = self.seen.get(pool)
        if not state or (last is not None and last[:2] == (state, shepherd)):
            return
        number = generation if isinstance(generation, int) else None
        self.remember(pool, (state, shepherd, number))
        self.hub.publish(
            {
                "type": "pool",
                "pool": pool,
                "state": state,
                "shepherd": shepherd,
                "generation": number,
                "reason": reason,
            }
        )

    def from_shepherd(self, event: Mapping[str, object]) -> None:
        """``PoolService.listeners``: the shepherd core's ComponentChanged and PoolChanged."""
        pool = str(event.get("pool", ""))
        if "path" in event:
            self.hub.publish({"type": "component", **event})
            return
        generation = event.get("generation")
        state, reason = str(event.get("state", "")), str(event.get("reason", ""))
        self.pool(pool, state, self.pools.name, generation, reason)

    def from_rumor(self, rumor: Rumor) -> None:
        """Pool rumors learned from gossip: how agents that are not the shepherd learn.

        Gossip keeps only a pool's latest state, so a short one can pass unseen; the
        termination record says "terminating" before the shepherd's own rumor can.
        """
        from sdmesh.agent.pools import TOPIC_TOMB

        if rumor.key in self.pools.shepherding:
            return  # ours: from_shepherd says it, with the reason the rumor leaves out
        from sdmesh.pools.records import check_pool_id

        try:
            check_pool_id(rumor.key)
        except ValueError:
            return
        last = self.seen.get(rumor.key)
        if rumor.topic == TOPIC_TOMB:
            if rumor.key not in self.pools.tombs:
                return  # refused (unsigned, forged: counted there) or older: ends nothing
            if last is not None and last[0] not in ("terminating", "terminated", "failed"):
                self.pool(rumor.key, "terminating", last[1], last[2], "terminated on request")
            return
        body = _pool_rumor(rumor)
        if body is not None:
            self.pool(
                rumor.key,
                str(body.get("state", "")),
                str(body.get("shepherd", "")),
                body.get("generation"),
                str(body.get("reason", "")),
            )

    def from_host(self, op: LeafOp) -> None:
        """This host's own leaf operations, for pools another agent shepherds (the shepherd
        reports its pools' components itself, hosts included)."""
        if op.pool in self.pools.shepherding:
            return
        self.hub.publish(
            {
                "type": "component",
                "pool": op.pool,
                "path": op.path,
                "kind": op.kind,
                "state": op.state,
                "host": self.pools.name,
                "domain": op.domain,
            }
        )


def _pool_rumor(rumor: Rumor) -> dict[str, Any] | None:
    from sdmesh.agent.pools import TOPIC_POOL

    if rumor.topic != TOPIC_POOL:
        return None
    import msgpack

    from sdmesh.pools.records import RecordFormatError, checked_rumor_ids

    try:
        body = msgpack.unpackb(rumor.payload, raw=False)
    except Exception:
        return None
    if not isinstance(body, dict):
        return None
    try:
        checked_rumor_ids(rumor.key, body)  # what reaches the event stream is well spelled
    except RecordFormatError:
        return None
    return body


def follow_pools(hub: EventHub, pools: PoolService) -> None:
    """Pool and component events: the shepherd's, gossiped pool states, this host's leaves.

    Pools already known when this is called are remembered, not announced: they did not
    change.
    """
    feed = _PoolFeed(hub, pools)
    for rumor in pools.node.core.rumors():
        body = _pool_rumor(rumor)
        if body is not None:
            generation = body.get("generation")
            feed.remember(
                rumor.key,
                (
                    str(body.get("state", "")),
                    str(body.get("shepherd", "")),
                    generation if isinstance(generation, int) else None,
                ),
            )
    pools.listeners.append(feed.from_shepherd)
    pools.node.rumor_listeners.append(feed.from_rumor)
    pools.leaf_listeners.append(feed.from_host)


__all__ = [
    "Event",
    "EventHub",
    "Subscription",
    "follow_members",
    "follow_pools",
    "member_event",
]
