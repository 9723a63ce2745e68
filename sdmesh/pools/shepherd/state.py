"""The shepherd core's state and the small steps every part of it shares.

What one pool's shepherd knows (placement, leaves, away and lost hosts, the pause), the
record built from it, the status of every leaf, and the primitives the other parts queue
actions with: send an order, save, warn, arm a timer, and the reclaim gate (a lost host's
units move only once its reclaim completed)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.engine import Engine
from sdmesh.pools.layout import Layout
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import Order, PoolRecord
from sdmesh.pools.shepherd.actions import (
    Action,
    Announce,
    PoolChanged,
    ReclaimHost,
    SaveRecord,
    SendOrder,
    SetTimer,
    Warning,
)
from sdmesh.pools.shepherd.events import Event

RETRY_SECONDS = 1.0
MAX_RETRIES = 5
#: How long the units of a host that left gracefully stay placed there (its VMs keep
#: running) before they count as lost: long enough for an agent restart or upgrade.
AWAY_GRACE = 300.0


@dataclass
class Leaf:
    """A leaf as the shepherd tracks it: its unit, last known state, host and the engine's
    operation under way there."""

    path: str
    unit: str
    state: str = "created"
    host: str = ""
    #: The engine's operation in flight ("deploy", "start", "terminate").
    engine_op: str | None = None
    retries: int = 0


class ShepherdState:
    """One pool's shepherd: what it knows, and the steps every part of the core shares."""

    def __init__(
        self,
        record: PoolRecord,
        tree: ComponentDescription,
        layout: Layout,
        kinds: dict[str, str],
        offers: tuple[HostOffer, ...],
        wall_offset: float = 0.0,
    ) -> None:
        """``wall_offset``: wall clock minus the ``now`` this core is given; the record
        keeps grace ends in wall-clock time, the one clock every agent shares."""
        self.pool = record.pool
        self.digest = record.digest
        self.signature = record.signature  # the operator's envelope, on every deploy/start
        self.me = record.shepherd
        self.generation = record.generation
        self.state = record.state if record.state != "failed" else "failed"
        self.reason = record.reason
        self.layout = layout
        self.kinds = kinds
        self.placement = dict(record.placement)
        self.offers = {offer.name: offer for offer in offers}
        self.engine = Engine(tree)
        self.leaves: dict[str, Leaf] = {}
        for unit in layout.units.values():
            for path in unit.leaves:
                self.leaves[path] = Leaf(path, unit.path)
        for path in layout.local:
            self.leaves[path] = Leaf(path, path)
        self.refused: dict[str, set[str]] = {}
        #: Units being rebuilt on a new host: (leaf, op) still to redo, in order. The
        #: engine's own operations on their leaves wait until the rebuild is done.
        self.replays: dict[str, deque[tuple[str, str]]] = {}
        self.ended = False
        #: Hosts that left gracefully -> when their grace ends; what they run (their own
        #: word at a hand-over, else what a shepherd knew when they left). From the record:
        #: a takeover honours a predecessor's grace instead of rebuilding their VMs.
        self.wall_offset = wall_offset
        self.away: dict[str, float] = {h: t - wall_offset for h, t in record.away.items()}
        self.vouched: dict[str, dict[str, str]] = {
            h: dict(record.vouched.get(h, {})) for h in record.away
        }
        self.begun = False
        #: Without a majority (``Pause``): events kept for ``Resume``.
        self.paused = False
        self._deferred: list[Event] = []
        #: The successor this core handed the pool to; set, the core does nothing more.
        self.handed_to: str | None = None
        #: The newer generation a host had seen when it fenced us; set, the core is inert.
        self.superseded: int | None = None
        #: Lost hosts whose reclaim is under way (``ReclaimHost``): their units stay placed
        #: there, nothing of them is rebuilt, until ``HostReclaimed``.
        self.reclaiming: set[str] = set()
        #: Lost hosts whose reclaim completed: their units may move (``isolation "keep"``
        #: ones stay until the host is back).
        self.reclaimed: set[str] = set()
        self._actions: list[Action] = []
        self._now = 0.0
        self._engine_timers: dict[str, tuple[str, int]] = {}

    def superseded_by(self, stored: PoolRecord) -> bool:
        """A record saved by someone else while we were paused: another shepherd took the
        pool over, so this core's state is stale and must not resume. Never a submission
        record another member wrote (sdmesh.pools.record_seal.supersedes)."""
        from sdmesh.pools.record_seal import supersedes

        return supersedes(stored, self.generation)

    def announcement(self) -> Announce | None:
        """What the driver publishes again every few hours (``ANNOUNCE_PERIOD``): the pool's
        rumor while it lives here; nothing once it ended or was handed over."""
        if (
            self.ended
            or self.handed_to is not None
            or self.superseded is not None
            or self.engine.root.state.ended
        ):
            return None
        return Announce(self.state)

    def record(self) -> PoolRecord:
        away = {h: t + self.wall_offset for h, t in self.away.items()}
        return PoolRecord(
            self.pool,
            self.digest,
            self.generation,
            self.me,
            self.state,
            dict(self.placement),
            self.reason,
            away,
            {h: dict(self.vouched.get(h, {})) for h in away},
            self.signature,
        )

    def components(self) -> list[dict[str, object]]:
        """Every leaf with its host and state, in descriptor order (``status --json``). A leaf
        being rebuilt (its unit lost or moved) is not running, whatever the engine, which
        never notices the rebuild, believes."""
        out: list[dict[str, object]] = []
        for leaf in self.leaves.values():
            state = leaf.state
            if leaf.unit in self.replays and state in ("deployed", "starting", "running"):
                state = (
                    "deploying" if (leaf.path, "deploy") in self.replays[leaf.unit] else "starting"
                )
            out.append(
                {
                    "path": leaf.path,
                    "kind": self.kinds.get(leaf.path, "Component"),
                    "host": leaf.host or self.placement.get(leaf.unit, ""),
                    "state": state,
                }
            )
        return out

    # ========================================================= shared primitives
    def _send(self, leaf: Leaf, op: str, host: str) -> None:
        leaf.host = host
        unit = self.layout.units.get(leaf.unit)
        demand = unit.demand if unit is not None else None
        self._actions.append(
            SendOrder(
                host,
                Order(
                    self.pool,
                    self.generation,
                    self.me,
                    self.digest,
                    leaf.path,
                    op,
                    leaf.unit,
                    demand.vcpus if demand else 0,
                    demand.memory_mib if demand else 0,
                    self.signature,
                ),
            )
        )

    def _resend(self, leaf: Leaf, op: str) -> None:
        host = self.placement.get(leaf.unit)
        if host is not None:
            self._send(leaf, op, host)

    def _awaited(self, leaf: Leaf) -> str | None:
        """The operation this leaf waits for a host to do: the head of its unit's rebuild,
        else the engine's."""
        chain = self.replays.get(leaf.unit)
        if chain:
            path, op = chain[0]
            return op if path == leaf.path else None
        return leaf.engine_op

    def _kept_in_isolation(self, unit_path: str) -> bool:
        """A unit whose host keeps it running without a lease (``isolation "keep"``): the
        mesh never rebuilds it while that host is lost."""
        unit = self.layout.units.get(unit_path)
        return unit is not None and unit.isolation == "keep"

    def _vouched_for(self, host: str, path: str, op: str) -> bool:
        state = self.vouched.get(host, {}).get(path)
        return state == "running" or (op == "deploy" and state == "deployed")

    def _lose(self, host: str) -> None:
        """``host`` is lost: its units move only once its reclaim completes (its lease
        surely ended, so it stopped their VMs), never before: two copies otherwise."""
        if host in self.reclaiming or host in self.reclaimed or host in self.offers:
            return
        if not any(h == host for h in self.placement.values()):
            return  # nothing of this pool there: nothing to wait for
        self.reclaiming.add(host)
        self._actions.append(ReclaimHost(host))

    def _arm(self, name: str, delay: float) -> None:
        self._actions.append(SetTimer(name, self._now + delay))

    def _save(self) -> None:
        self._actions = [a for a in self._actions if not isinstance(a, SaveRecord)] + [
            SaveRecord(self.record())
        ]

    def _set_pool(self, state: str, reason: str = "") -> None:
        if state == self.state and reason == self.reason:
            return
        self.state = state
        if reason:
            self.reason = reason
        self._actions.append(PoolChanged(state, reason))

    def _warn(self, path: str, message: str) -> None:
        self._actions.append(Warning(path, message))
