"""The pool service's shared state, and the calls its parts make on one another.

The service is assembled from parts (sdmesh.agent.pools.*), one responsibility each; they
share this state (one event loop, no locks) and reach one another through the methods
declared here, which the part that owns them implements.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from sdmesh.agent.pools.common import KnownPool, LeafOp, log_failure
from sdmesh.components.policy import HostPolicy
from sdmesh.pools import host as hc
from sdmesh.pools.authz import MeshRefusals
from sdmesh.pools.losses import LossConfirmer
from sdmesh.pools.ownership import Owners, QuorumGate
from sdmesh.pools.records import Order, PoolRecord, PoolSpec, Report, Tomb
from sdmesh.safeio import ensure_private_dir
from sdmesh.transport import StreamClient

if TYPE_CHECKING:
    from sdmesh.agent.mesh import MeshNode
    from sdmesh.components.context import HostContext
    from sdmesh.dht import Dht
    from sdmesh.ha.lease_service import LeaseService
    from sdmesh.hypervisor import HostCapabilities, HypervisorDriver
    from sdmesh.lifecycle.model import Node
    from sdmesh.membership import Member
    from sdmesh.pools import shepherd as sc
    from sdmesh.pools.placement import HostOffer
    from sdmesh.runner.app import Component

#: How long a pool may be unknown to the whole mesh before the reaper removes its leftovers.
REAP_GRACE = 300.0


@dataclass
class HostedPool:
    """One pool's share on this host: its tree (for LAZY links) and live components."""

    spec: PoolSpec
    root: Node
    nodes: dict[str, Node]
    context: HostContext
    components: dict[str, Component] = field(default_factory=dict)
    #: Its units (VM paths) a lease protects (sdmesh.ha.policy.fenceable).
    fenceable: frozenset[str] | None = None


@dataclass
class ShepherdRun:
    """One pool shepherded here: its core and what the driver queued for it."""

    core: sc.Shepherd
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    orders: dict[str, list[Order]] = field(default_factory=lambda: defaultdict(list))
    save: PoolRecord | None = None
    flushing: asyncio.Task[None] | None = None
    events: list[dict[str, object]] = field(default_factory=list)
    #: Paused (no majority): a check that nobody took the pool over meanwhile is under way.
    resuming: bool = False


class PoolState:
    """What the parts of the pool service share: one instance, one event loop, no locks."""

    def __init__(
        self,
        name: str,
        node: MeshNode,
        dht: Dht,
        client: StreamClient,
        driver: HypervisorDriver,
        caps: HostCapabilities,
        state_dir: Path,
        lease: LeaseService | None = None,
    ) -> None:
        self.name = name
        #: This agent's lease (sdmesh.ha): None runs without leases (nothing is fenced).
        self.lease = lease
        self.node = node
        self.dht = dht
        self.client = client
        self.driver = driver
        self.caps = caps
        #: Absolute: libvirt refuses relative disk paths (``join --state-dir state`` made
        #: every deploy fail), and the agent's working directory is nobody's business.
        self.state_dir = state_dir.absolute()
        self.host = hc.HostCore(name, caps.cpus, caps.memory_mib)
        self.known: dict[str, KnownPool] = {}
        #: Termination records heard (pool -> what they end), until POOL_RETENTION.
        self.tombs: dict[str, Tomb] = {}
        self.shepherding: dict[str, ShepherdRun] = {}
        self.listeners: list[Callable[[dict[str, object]], None]] = []
        self.leaf_listeners: list[Callable[[LeafOp], None]] = []
        #: Where this host decides whether it takes on a new unit: each guard returns why
        #: not (e.g. no lease to run a restartable VM), or None. A refusal is the order's
        #: answer, and the shepherd places the unit elsewhere.
        self.admission_guards: list[Callable[[Order], str | None]] = []
        #: Where this host decides whether it runs a leaf of a pool's descriptor (deploy,
        #: start): each guard gets the spec, the leaf's node and the operation and returns
        #: why not (e.g. a descriptor no trusted operator signed), or None. A refusal fails
        #: the leaf with that reason; terminations are never refused.
        self.leaf_guards: list[Callable[[PoolSpec, Node, str], str | None]] = []
        self.admission_guards.append(self.lease_veto)
        self._host_pools: dict[str, HostedPool] = {}
        #: Descriptor loads under way (``_hosted``), one per pool.
        self._hosting: dict[str, asyncio.Task[HostedPool]] = {}
        self._digests: dict[str, str] = {}
        #: Per pool, the operator's signature envelope its orders carry (checked by the
        #: ``leaf_guards`` before every deploy and start; docs/security.md).
        self._signatures: dict[str, bytes] = {}
        self._specs: dict[str, PoolSpec] = {}
        #: Reports to send, per shepherd, with how many times each was tried already.
        self._reports: dict[str, list[tuple[Report, int]]] = defaultdict(list)
        self._report_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._view_pending = False
        self._reaper = hc.Reaper(REAP_GRACE)
        #: Records whose DHT write did not get stored yet (the newest per pool), retried.
        self._unsaved: dict[str, PoolRecord] = {}
        self._saver: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._periodic: asyncio.Task[None] | None = None
        #: Pools this agent shepherded to their end, for status until the record says so.
        self._finished_runs: dict[str, ShepherdRun] = {}
        #: Leaving the mesh (``leave``): shepherd nothing, admit no new unit.
        self.leaving = False
        #: Members that handed pools to us and are about to leave -> until when (monotonic)
        #: we count them as gone; their leave announcement normally follows within seconds.
        self.departing: dict[str, float] = {}
        #: Majority rule with hysteresis: whether the shepherds here may act.
        self._gate = QuorumGate()
        #: Lost members count as live until their loss is confirmed (false "dead" verdicts).
        self._losses = LossConfirmer()
        self._recheck: asyncio.TimerHandle | None = None
        #: Pool -> shepherd, for the live members (and for everyone, leavers included):
        #: rebuilt only when who is live changes, not on every metadata update.
        self._owners = Owners(())
        self._owners_all = Owners(())
        #: Requests from the mesh refused as unauthorized (sdmesh.pools.authz), by reason.
        self.refusals = MeshRefusals()
        #: With a trust store: the check of a termination's operator signature, which every
        #: termination from the mesh needs (sdmesh.trust.termination).
        self.termination_check: Callable[[object, str, int], str | None] | None = None
        #: With host identities (sdmesh.pools.record_seal, set by the agent): how this agent
        #: proves the records and pool and tombstone rumors it writes, and checks others'
        #: proofs; ``envelope_check``: its trust store's check of a submission record's
        #: operator envelope. None: no identities, records and rumors are not checked.
        self.prove: Callable[[bytes], bytes] | None = None
        self.check_signed: Callable[[str, bytes, bytes], bool] | None = None
        self.envelope_check: Callable[[bytes, str, str], str | None] | None = None
        #: Rumors whose writer is not known here yet, per (topic, key) (RecordSeals).
        self._parked: dict[tuple[str, str], Any] = {}
        #: Verdicts of the membership core's rumor check, per rumor and writer certificate.
        self._admitted: dict[tuple[str, str, bytes, str, bytes], Any] = {}
        #: Pools heard of only from rumors whose writer is unknown here (dead before this
        #: agent saw it): not trusted state, a reason to try a (fully checked) takeover.
        self._hints: dict[str, KnownPool] = {}
        #: Takeovers under way, one per pool at most (view events come in bursts), and per
        #: pool the retry a takeover without a usable record waits for, and how many it had.
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        self._takeover_retry: dict[str, asyncio.TimerHandle] = {}
        self._takeover_misses: dict[str, int] = {}
        #: Per pool, the generation a host fenced our core with: a takeover starts above it.
        self._takeover_floor: dict[str, int] = {}
        #: An early inventory pass scheduled (``_inventory_soon``), and the live members the
        #: last view had (a member coming back schedules one).
        self._inventory_due: asyncio.TimerHandle | None = None
        self._live_before: frozenset[str] = frozenset()
        #: Local record and spec files are written in worker threads, one at a time and in
        #: the order asked: an older record must not land after a newer one.
        self._file_writes = asyncio.Lock()
        #: Descriptor loads of recovered pools (``load_policies``), for ``policies_known``.
        self._policy_loads: list[asyncio.Task[None]] = []
        #: (pool, unit) whose fence destroy is under way (fencing.py): not fenced twice.
        self._fencing: set[tuple[str, str]] = set()
        #: What descriptors may make this host do (sdmesh.components.policy): the agent sets
        #: it from its configuration before ``start``; deny by default until then.
        self.policy = HostPolicy()
        # Records and descriptors (they can hold cloud-init user data): root's alone.
        ensure_private_dir(self.state_dir / "specs", 0o700, what="specs directory")

    def newest_generation(self, pool: str) -> int:
        """The newest generation of ``pool`` this host knows (0: none)."""
        known = self.known.get(pool)
        tomb = self.tombs.get(pool)
        run = self.shepherding.get(pool)
        hosted = self.host.pools.get(pool)
        return max(
            known.generation if known is not None else 0,
            tomb.generation if tomb is not None else 0,
            run.core.generation if run is not None else 0,
            hosted.generation if hosted is not None else 0,
        )

    def tomb_body(self, pool: str, generation: int, signature: bytes = b"") -> dict[str, object]:
        """The tombstone rumor this agent publishes, with the operator's termination
        ``signature`` as it was received (never one of this host's making: no laundering)."""
        body = Tomb(generation, 0.0).encode(self.name)
        if signature:
            body["sig"] = signature
        return body

    def terminate_refusal(
        self, pool: str, generation: object, signature: object = b"", newest: int = 0
    ) -> str | None:
        raise NotImplementedError

    def adoption_refusal(self, pool: str, sender: str) -> str | None:
        raise NotImplementedError

    def signature_of(self, pool: str) -> bytes:
        """The operator's signature envelope this host last got in ``pool``'s orders (empty:
        none, which no leaf guard accepts)."""
        return self._signatures.get(pool, b"")

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)
        return task

    def _view_changed(self) -> None:
        """Look at the membership view again, once, soon (view events come in bursts)."""
        if not self._view_pending:
            self._view_pending = True
            self._loop.call_soon(self._apply_view)

    def _publish(self, topic: str, pool: str, body: dict[str, object]) -> None:
        body = self.sealed_rumor(topic, pool, body)
        self.node.publish(topic, pool, bytes(msgpack.packb(body, use_bin_type=True)))

    # ----------------------------------------------- implemented by the service's parts
    # view (MembershipView)
    def live_members(self) -> list[Member]:
        raise NotImplementedError

    def away_hosts(self) -> frozenset[str]:
        raise NotImplementedError

    def has_quorum(self) -> bool:
        raise NotImplementedError

    def offers(self) -> tuple[HostOffer, ...]:
        raise NotImplementedError

    def shepherd_for(self, pool: str) -> str | None:
        raise NotImplementedError

    def _address(self, name: str) -> tuple[str, int] | None:
        raise NotImplementedError

    def _being_handed_over(self, pool: str) -> bool:
        raise NotImplementedError

    def _prune_departing(self) -> None:
        raise NotImplementedError

    # following the view (ViewFollower)
    def _apply_view(self) -> None:
        raise NotImplementedError

    def _start_take_over(self, pool: str) -> None:
        raise NotImplementedError

    # rumors (RumorFollower)
    def _heard_tomb(self, pool: str, generation: int) -> bool:
        raise NotImplementedError

    # host side (HostSide, HostReports)
    def _host_feed(self, event: hc.Event) -> list[hc.Answer]:
        raise NotImplementedError

    def take_orders(self, orders: list[Order]) -> list[list[object]]:
        raise NotImplementedError

    async def _hosted(self, pool: str) -> HostedPool:
        raise NotImplementedError

    # leases (Fencing)
    def lease_veto(self, order: Order) -> str | None:
        raise NotImplementedError

    def unit_fenceable(self, pool: str, unit: str) -> bool | None:
        raise NotImplementedError

    def start_refusal(self, pool: str, unit: str) -> str | None:
        raise NotImplementedError

    async def _destroy_failed_start(self, pool: str, path: str) -> None:
        raise NotImplementedError

    async def undo_start(self, pool: str, path: str) -> str:
        raise NotImplementedError

    def load_policies(self, pools: dict[str, str]) -> None:
        raise NotImplementedError

    def _queue_report(self, shepherd: str, report: Report, attempt: int = 0) -> None:
        raise NotImplementedError

    def _deliver_reports(self, reports: list[Report]) -> list[str]:
        raise NotImplementedError

    def _inventory_soon(self) -> None:
        raise NotImplementedError

    def _handle_inventory(
        self, pool: str, host: str, leaves: dict[str, int], states: dict[str, str]
    ) -> None:
        raise NotImplementedError

    # authorization (MeshAuthz)
    def resurrection_refusal(self, pool: str, generation: int, signature: bytes) -> str | None:
        raise NotImplementedError

    # shepherd side (ShepherdDriver)
    async def _shepherd(
        self,
        spec: PoolSpec,
        generation: int,
        old: PoolRecord | None,
        vouched: Mapping[str, Mapping[str, str]] | None = None,
        signature: bytes = b"",
    ) -> None:
        raise NotImplementedError

    def _stop_shepherding(self, pool: str) -> None:
        raise NotImplementedError

    def _pause(self, pool: str) -> None:
        raise NotImplementedError

    async def _resume(self, pool: str, run: ShepherdRun) -> None:
        raise NotImplementedError

    def _feed(self, pool: str, event: sc.Event) -> None:
        raise NotImplementedError

    async def _flush(self, pool: str, run: ShepherdRun) -> None:
        raise NotImplementedError

    # records and rumors proven by their writer (RecordSeals)
    def sealed_record(self, record: PoolRecord) -> PoolRecord:
        raise NotImplementedError

    def record_taken(self, record: PoolRecord) -> bool:
        raise NotImplementedError

    def sealed_rumor(self, topic: str, pool: str, body: dict[str, object]) -> dict[str, object]:
        raise NotImplementedError

    def announce(self) -> None:
        raise NotImplementedError

    def rumor_refused(self, rumor: Any, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def lifts_tombstone(self, pool: str, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _on_rumor(self, rumor: Any) -> None:
        raise NotImplementedError

    # storage (PoolStore)
    async def write_record(self, record: PoolRecord) -> bool:
        raise NotImplementedError

    async def lookup_record(self, pool: str) -> tuple[bool, PoolRecord | None]:
        raise NotImplementedError

    async def read_record(self, pool: str, *, newest: bool = False) -> PoolRecord | None:
        raise NotImplementedError

    async def _local_record(self, pool: str) -> PoolRecord | None:
        raise NotImplementedError

    async def store_spec(self, spec: PoolSpec) -> None:
        raise NotImplementedError

    async def spec(self, digest: str, pool: str | None = None, ask: str = "") -> PoolSpec:
        raise NotImplementedError
