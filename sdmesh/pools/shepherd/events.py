"""The shepherd core's events: what its driver tells it (hosts' answers, reports and
inventories, membership, timers, the operator's requests, reclaims, majority lost/back)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import Order, Report


@dataclass(frozen=True)
class Begin:
    """Start the pool (or take it over): deploy and start the whole tree.

    ``vouched``: at a hand-over, what the departing shepherd's own host runs of the pool
    (host -> leaf path -> ``deployed`` or ``running``). The host is leaving and cannot be
    asked; its VMs keep running, so its word stands in for the answers it would give."""

    vouched: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answered:
    """A host's immediate answer to an order: ``accepted``, ``refused`` (with the reason),
    ``fenced`` (it has seen generation ``seen``) or ``unreachable``."""

    host: str
    order: Order
    outcome: str
    reason: str = ""
    seen: int = 0


@dataclass(frozen=True)
class Reported:
    report: Report


@dataclass(frozen=True)
class MembersChanged:
    """The live members and what they offer (from gossiped metadata); ``away``: members
    that left gracefully or are leaving: their VMs keep running without an agent."""

    offers: tuple[HostOffer, ...]
    away: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Inventory:
    """What a host says it runs of this pool: leaf path -> generation it was ordered at;
    ``states``: leaf path -> its state there (``running``, ``deployed``: a VM that died is
    defined but not running). Hosts from before states were sent leave it empty."""

    host: str
    leaves: dict[str, int]
    states: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TerminateRequested:
    reason: str = "terminated on request"


@dataclass(frozen=True)
class TimerFired:
    name: str


@dataclass(frozen=True)
class HandOver:
    """This agent is leaving: give the pool to ``successor`` (empty: nobody is left)."""

    successor: str


@dataclass(frozen=True)
class HostReclaimed:
    """The host lost earlier (``ReclaimHost``) has surely stopped its fenceable VMs (a
    majority of voters says its lease ended): its units may be rebuilt elsewhere now."""

    host: str


@dataclass(frozen=True)
class Pause:
    """This agent lost the majority of the mesh: decide nothing (no order, no move, no save)
    until ``Resume``; what arrives meanwhile waits (the latest view only, no inventory)."""


@dataclass(frozen=True)
class Resume:
    """The majority is back and nobody took the pool over meanwhile: go on at the same
    generation, with what arrived during the pause, resending what may have been dropped."""


Event = (
    Begin
    | Answered
    | Reported
    | MembersChanged
    | Inventory
    | TerminateRequested
    | TimerFired
    | HandOver
    | HostReclaimed
    | Pause
    | Resume
)
