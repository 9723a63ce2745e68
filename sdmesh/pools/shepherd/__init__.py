"""The shepherd core: one pool's lifecycle across the mesh, as events in and actions out.

The shepherd runs the single-host lifecycle engine over the whole tree, so SmartFrog's
semantics (Compound barriers, Parallel ``asynchCreateChild``, ``sfSyncTerminate`` order,
liveness) hold across hosts unchanged; what differs is where a leaf's work happens. Each leaf
operation the engine asks for becomes an :class:`~sdmesh.pools.records.Order` to the host the
leaf's unit is placed on, and the host's :class:`~sdmesh.pools.records.Report` becomes the
engine's ``LeafDone``.

Around the engine the core owns what a coordinator-free pool needs:

* placement of every unit up front, saved (``SaveRecord``) before any order uses it, so a
  successor shepherd finds the same placement in the DHT;
* re-placement when a host refuses a unit (never overcommit: the host is the authority);
* fencing: every order carries the generation; a host that has seen a newer one answers
  ``fenced``, to any order, and the fenced core steps down (``Superseded``): its driver
  reads the newer record and, if this agent is still the rightful shepherd, takes the pool
  over from it (the newer placement included) at a higher generation;
* HA: when a host dies, units with a ``restart`` policy move to other hosts (their completed
  operations are replayed there; the engine never notices), others end abnormally and the
  lifecycle rules decide what follows;
* reconciliation: a host's inventory of what it runs is compared with the placement, and
  stale copies (a host that was partitioned away while its units moved) are released;
* graceful departures: a host that *left* (``sdmesh leave``, SIGTERM) keeps its VMs running,
  so its units stay where they are for ``AWAY_GRACE`` (an agent restart or upgrade) before
  they count as lost, unlike a host that died or was cut off.

Takeover is a fresh core over the saved record: its engine re-runs deploy and start, and
hosts answer at once for leaves they already run, so nothing is started twice. A hand-over
(the shepherd leaves) is a takeover told in advance: the leaving core hands its freshest
record to its successor and never acts again; the successor takes over at a higher
generation and trusts what the leaving host vouched it runs (it cannot ask it any more).
The record keeps every away host's grace end and what it runs, so any later takeover honours
the grace too. Without a majority the driver pauses the core (``Pause``/``Resume``): it
decides nothing meanwhile and goes on at the same generation.

The core is split by responsibility, each part a layer over the one before (one class, no
cycles): ``events`` and ``actions`` (what goes in and out), ``state`` (what the core knows,
the record, the status, the shared primitives), ``units`` (placement and replay of units),
``engine_link`` (the engine's operations as orders), ``failover`` (departures, losses,
reclaims, rebuilds), ``answers`` (hosts' answers, reports, inventories, timers) and ``core``
(``Shepherd.handle``: dispatch, pause and resume, begin, hand-over).
"""

from sdmesh.pools.shepherd.actions import (
    Action,
    Announce,
    CancelReclaim,
    ComponentChanged,
    HandOff,
    PoolChanged,
    ReclaimHost,
    SaveRecord,
    SendOrder,
    SetTimer,
    Superseded,
    Warning,
)
from sdmesh.pools.shepherd.core import Shepherd
from sdmesh.pools.shepherd.events import (
    Answered,
    Begin,
    Event,
    HandOver,
    HostReclaimed,
    Inventory,
    MembersChanged,
    Pause,
    Reported,
    Resume,
    TerminateRequested,
    TimerFired,
)
from sdmesh.pools.shepherd.state import AWAY_GRACE, MAX_RETRIES, RETRY_SECONDS
from sdmesh.pools.shepherd.units import unit_of

__all__ = [
    "AWAY_GRACE",
    "MAX_RETRIES",
    "RETRY_SECONDS",
    "Action",
    "Announce",
    "Answered",
    "Begin",
    "CancelReclaim",
    "ComponentChanged",
    "Event",
    "HandOff",
    "HandOver",
    "HostReclaimed",
    "Inventory",
    "MembersChanged",
    "Pause",
    "PoolChanged",
    "ReclaimHost",
    "Reported",
    "Resume",
    "SaveRecord",
    "SendOrder",
    "SetTimer",
    "Shepherd",
    "Superseded",
    "TerminateRequested",
    "TimerFired",
    "Warning",
    "unit_of",
]
