"""The pool service: the asyncio driver of the host core and of the shepherd cores.

Every decision is a core's (sdmesh.pools.host, sdmesh.pools.shepherd); this package moves
orders, answers and reports between agents over the sealed stream transport, runs leaf
operations on libvirt through the single-host components, keeps specs and records in the DHT,
and follows the membership view to take over (or hand back) the pools this agent shepherds.

Its parts, one responsibility each, share the state in ``state``:

- ``view``: who is live, leaving or away; the majority rule; offers; who shepherds a pool.
- ``following``: reacting to the view (pause, hand back, take over, one task per pool).
- ``rumors``: pool and termination gossip, heard and announced.
- ``hosting``: this host's leaf operations, run as the host core decides; recovery.
- ``reports``: reports and inventories from this host to the shepherds; the reaper's pass.
- ``shepherding``: the driver of each shepherd core (timers, record saves, orders).
- ``handover``: leaving (hand every pool to a successor) and adopting what a leaver hands us.
- ``store``: records and specs in the DHT, with a private local file as fallback.
- ``operations``: what the API asks (submit, dry run, status, list, terminate).
- ``service``: the assembled ``PoolService``, its life cycle, RPC and periodic work.

Wire (sealed TCP requests on the gossip port, next to membership's push-pull):
``{"rpc": "orders", "orders": [...]}`` answered with one ``[outcome, reason, seen]`` each;
``{"rpc": "reports", ...}``, ``{"rpc": "inventory", ...}``, ``{"rpc": "submit", ...}``,
``{"rpc": "status", ...}``, ``{"rpc": "terminate", ...}`` and ``{"rpc": "handover", ...}``.

An agent shepherds only while it sees a majority of the mesh (``has_quorum``). When it
leaves (``leave``), it hands every pool it shepherds to its successor before announcing the
leave; its host's VMs keep running.
"""

from sdmesh.agent.pools.common import TOPIC_POOL, TOPIC_TOMB, KnownPool, LeafOp, PoolError
from sdmesh.agent.pools.service import PoolService
from sdmesh.agent.pools.trees import remember_tree, spec_tree, tree_of

__all__ = [
    "TOPIC_POOL",
    "TOPIC_TOMB",
    "KnownPool",
    "LeafOp",
    "PoolError",
    "PoolService",
    "remember_tree",
    "spec_tree",
    "tree_of",
]
