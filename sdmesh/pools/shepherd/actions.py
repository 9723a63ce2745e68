"""The shepherd core's actions: what its driver does for it (save the record, send orders,
arm timers, tell the operator, hand the pool over, step down, ask for or cancel a reclaim)."""

from __future__ import annotations

from dataclasses import dataclass

from sdmesh.pools.records import Order, PoolRecord


@dataclass(frozen=True)
class SaveRecord:
    """Write the record to the DHT; orders after it in the same batch depend on it."""

    record: PoolRecord


@dataclass(frozen=True)
class SendOrder:
    host: str
    order: Order


@dataclass(frozen=True)
class SetTimer:
    name: str
    at: float


@dataclass(frozen=True)
class ComponentChanged:
    path: str
    kind: str
    state: str
    host: str
    #: Why it ended, for a component that failed (its termination record).
    reason: str = ""


@dataclass(frozen=True)
class PoolChanged:
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Warning:
    path: str
    message: str


@dataclass(frozen=True)
class HandOff:
    """Hand ``record`` (the freshest state, saved with the same batch) to ``successor``,
    which takes over at a higher generation. The core is inert from here on: a late answer
    (``fenced`` by the successor's orders) must not make it re-assert itself."""

    successor: str
    record: PoolRecord


@dataclass(frozen=True)
class Announce:
    """Publish the pool's rumor again, unchanged (``Shepherd.announcement``): rumors expire
    (a day), and a pool nobody has heard of is neither taken over nor safe from the reaper."""

    state: str


@dataclass(frozen=True)
class Superseded:
    """A host answered ``fenced``: it has seen generation ``seen`` of the pool from another
    shepherd (a takeover this agent never noticed, e.g. during a short cut or a false
    "dead"). This core's state is stale and it acts no more, whatever order was fenced: the
    driver reads the record again and, if this agent is still the pool's shepherd, takes
    the pool over from it above ``seen``; else it leaves the pool to its shepherd."""

    seen: int


@dataclass(frozen=True)
class ReclaimHost:
    """``host`` is lost (dead, cut off, or its leave's grace ran out): before any of its
    units is rebuilt elsewhere, find out that it has surely stopped them (its lease ended,
    sdmesh.ha); the driver answers ``HostReclaimed``. Meanwhile its units stay placed there."""

    host: str


@dataclass(frozen=True)
class CancelReclaim:
    """``host`` is back before its reclaim completed: stop asking (its VMs stayed, or it
    fenced them and reports so)."""

    host: str


Action = (
    SaveRecord
    | SendOrder
    | SetTimer
    | ComponentChanged
    | PoolChanged
    | Warning
    | HandOff
    | Superseded
    | ReclaimHost
    | CancelReclaim
)
