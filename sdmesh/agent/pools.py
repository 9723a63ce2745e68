"""The pool service: the asyncio driver of the host core and of the shepherd cores.

Every decision is a core's (sdmesh.pools.host, sdmesh.pools.shepherd); this module moves
orders, answers and reports between agents over the sealed stream transport, runs leaf
operations on libvirt through the single-host components, keeps specs and records in the DHT,
and follows the membership view to take over (or hand back) the pools this agent shepherds.

Wire (sealed TCP requests on the gossip port, next to membership's push-pull):
``{"rpc": "orders", "orders": [...]}`` answered with one ``[outcome, reason, seen]`` each;
``{"rpc": "reports", ...}``, ``{"rpc": "inventory", ...}``, ``{"rpc": "submit", ...}``,
``{"rpc": "status", ...}``, ``{"rpc": "terminate", ...}`` and ``{"rpc": "handover", ...}``.

An agent shepherds only while it sees a majority of the mesh (``has_quorum``). When it
leaves (``leave``), it hands every pool it shepherds to its successor before announcing the
leave; its host's VMs keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from sdmesh.agent.api_input import off_loop
from sdmesh.membership import Member, State
from sdmesh.pools import host as hc
from sdmesh.pools.ownership import Owners, QuorumGate, has_quorum, successors
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import (
    CHUNK_BYTES,
    Order,
    PoolRecord,
    PoolSpec,
    RecordFormatError,
    Report,
    Tomb,
    blob_head,
    join_blob,
    read_blob_head,
    retry_delay,
    split_blob,
)
from sdmesh.transport import StreamClient, StreamError

if TYPE_CHECKING:
    from sdmesh.agent.mesh import MeshNode
    from sdmesh.components.context import HostContext
    from sdmesh.dht import Dht
    from sdmesh.hypervisor import HostCapabilities, HypervisorDriver
    from sdmesh.lifecycle.model import Node
    from sdmesh.pools import shepherd as sc
    from sdmesh.runner.app import Component

log = logging.getLogger(__name__)

RPC_TIMEOUT = 10.0
INVENTORY_PERIOD = 15.0
#: How long a host waits after a termination record before tearing down what is left, so the
#: shepherd's ordered termination (sfSyncTerminate, reverse order) goes first when it can.
TOMBSTONE_GRACE = 5.0
#: How long a pool may be unknown to the whole mesh before the reaper removes its leftovers.
REAP_GRACE = 300.0
#: How long an ended pool's bookkeeping (tombstone, gossip, cached spec, tree, status) is
#: kept: past the rumor TTL (a day), so a late copy of its tombstone is not taken as new.
POOL_RETENTION = 26 * 3600.0
#: How often the pools shepherded here are announced again: well within the rumor TTL (a
#: day), so a live pool's rumor never expires.
ANNOUNCE_PERIOD = 4 * 3600.0
#: How many times a report is sent again (bounded backoff) before it is left to the
#: inventory, which reconciles the same every INVENTORY_PERIOD.
REPORT_ATTEMPTS = 12
#: A leaving agent waits this long at most for its host's leaf operations under way (what it
#: vouches for must be settled), then this long for successors to confirm its hand-overs.
LEAVE_DRAIN = 4.0
HANDOVER_TIMEOUT = 6.0
#: One successor's share of it: one that does not answer must leave time for the next.
HANDOVER_ATTEMPT = HANDOVER_TIMEOUT / 3
#: Closing waits this long at most for cancelled tasks and each pool's host context.
CLOSE_TIMEOUT = 1.0
#: A member that handed its pools to us counts as gone this long, until its leave shows.
DEPARTING_TTL = 30.0
#: Specs per hand-over request, by size (a request is one stream frame).
HANDOVER_BATCH_BYTES = 4 * 1024 * 1024
#: A takeover that finds no usable record (missing, or the DHT did not answer) is tried
#: again after this many seconds, doubling up to TAKEOVER_RETRY_MOST.
TAKEOVER_RETRY_FIRST = 2.0
TAKEOVER_RETRY_MOST = 60.0
TOPIC_POOL = "pool"
TOPIC_TOMB = "tomb"


class PoolError(Exception):
    """A request about pools that cannot be done as asked (the API's 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _HostPool:
    """One pool's share on this host: its tree (for LAZY links) and live components."""

    spec: PoolSpec
    root: Node
    nodes: dict[str, Node]
    context: HostContext
    components: dict[str, Component] = field(default_factory=dict)


@dataclass
class _Shepherding:
    core: sc.Shepherd
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    orders: dict[str, list[Order]] = field(default_factory=lambda: defaultdict(list))
    save: PoolRecord | None = None
    flushing: asyncio.Task[None] | None = None
    events: list[dict[str, object]] = field(default_factory=list)
    #: Paused (no majority): a check that nobody took the pool over meanwhile is under way.
    resuming: bool = False


@dataclass(frozen=True)
class LeafOp:
    """One of this host's leaf operations starting (``seconds`` is None) or finished: for
    live events and deploy-phase metrics, which watch the host without being the shepherd."""

    pool: str
    path: str
    op: str  # deploy, start, terminate
    state: str  # as status reports it: deploying, deployed, ..., failed
    kind: str
    sf_class: str
    domain: str
    seconds: float | None = None
    error: str | None = None


@dataclass
class _Known:
    """What this agent knows of a pool from gossip."""

    digest: str
    state: str
    shepherd: str
    seen: float
    generation: int = 0


class PoolService:
    def __init__(
        self,
        name: str,
        node: MeshNode,
        dht: Dht,
        client: StreamClient,
        driver: HypervisorDriver,
        caps: HostCapabilities,
        state_dir: Path,
    ) -> None:
        self.name = name
        self.node = node
        self.dht = dht
        self.client = client
        self.driver = driver
        self.caps = caps
        self.state_dir = state_dir
        self.host = hc.HostCore(name, caps.cpus, caps.memory_mib)
        self.known: dict[str, _Known] = {}
        #: Termination records heard (pool -> what they end), until POOL_RETENTION.
        self.tombs: dict[str, Tomb] = {}
        self.shepherding: dict[str, _Shepherding] = {}
        self.listeners: list[Callable[[dict[str, object]], None]] = []
        self.leaf_listeners: list[Callable[[LeafOp], None]] = []
        self._host_pools: dict[str, _HostPool] = {}
        self._digests: dict[str, str] = {}
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
        self._finished_runs: dict[str, _Shepherding] = {}
        #: Leaving the mesh (``leave``): shepherd nothing, admit no new unit.
        self.leaving = False
        #: Members that handed pools to us and are about to leave -> until when (monotonic)
        #: we count them as gone; their leave announcement normally follows within seconds.
        self.departing: dict[str, float] = {}
        #: Majority rule with hysteresis: whether the shepherds here may act.
        self._gate = QuorumGate()
        self._recheck: asyncio.TimerHandle | None = None
        #: Pool -> shepherd, for the live members (and for everyone, leavers included):
        #: rebuilt only when who is live changes, not on every metadata update.
        self._owners = Owners(())
        self._owners_all = Owners(())
        #: Takeovers under way, one per pool at most (view events come in bursts), and per
        #: pool the retry a takeover without a usable record waits for, and how many it had.
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        self._takeover_retry: dict[str, asyncio.TimerHandle] = {}
        self._takeover_misses: dict[str, int] = {}
        #: Local record and spec files are written in worker threads, one at a time and in
        #: the order asked: an older record must not land after a newer one.
        self._file_writes = asyncio.Lock()
        (state_dir / "specs").mkdir(parents=True, exist_ok=True)

    # =================================================================== life cycle
    async def start(self) -> None:
        """Rebuild this host's share from libvirt, then follow the mesh."""
        await self._recover()
        self.node.listeners.append(lambda _event: self._view_changed())
        self.node.rumor_listeners.append(self._on_rumor)
        for rumor in self.node.core.rumors():
            self._on_rumor(rumor)
        self._periodic = self._loop.create_task(self._periodic_work())

    async def close(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
        for run in self.shepherding.values():
            for handle in run.timers.values():
                handle.cancel()
        for handle in self._takeover_retry.values():
            handle.cancel()
        self._takeover_retry.clear()
        for task in list(self._tasks):
            task.cancel()
        # Bounded: a cancelled libvirt call may not end at once, and systemd kills the
        # agent at TimeoutStopSec (20 s) while the leave already used most of it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True), CLOSE_TIMEOUT
            )
        contexts = [hosted.context.close() for hosted in self._host_pools.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*contexts, return_exceptions=True), CLOSE_TIMEOUT)

    # ================================================================ membership view
    def live_members(self) -> list[Member]:
        """Alive and suspect members: a suspicion is not a death, and moving VMs or the
        shepherd on every suspicion would churn generations under load. Not members that
        are leaving (they handed their pools over), ourselves included once we leave."""
        return [m for m in self.node.core.live_members() if not self._departed(m.name)]

    def _departed(self, name: str) -> bool:
        if name == self.name:
            return self.leaving
        until = self.departing.get(name)
        return until is not None and time.monotonic() < until

    def away_hosts(self) -> frozenset[str]:
        """Members whose VMs run on without their agent: left gracefully, or leaving."""
        left = {m.name for m in self.node.core.members() if m.state is State.LEFT}
        return frozenset(left | {name for name in self.departing if self._departed(name)})

    def has_quorum(self) -> bool:
        """A strict majority of the members that have not left is alive in this agent's
        view, not even suspected: it may shepherd (take pools over, move VMs off hosts it
        cannot reach). Without one it may be the cut-off side of a partition, where acting
        would run VMs twice. Suspects do not count: a cut-off agent suspects everyone
        within a few probes, long before its first death verdict, so it stops before it
        could act on one; the connected side suspects only what it lost."""
        counted = [
            m
            for m in self.node.core.members()
            if m.state is not State.LEFT and not self._departed(m.name)
        ]
        alive = [m for m in counted if m.state is State.ALIVE]
        return has_quorum(len(alive), len(counted))

    def _being_handed_over(self, pool: str) -> bool:
        """The pool's shepherd, counting members that are leaving, is one of them: it hands
        the pool over itself (or, failing that, it is taken over once its leave shows)."""
        everyone = frozenset(m.name for m in self.node.core.live_members())
        if everyone != self._owners_all.members:
            self._owners_all = Owners(everyone)
        return self._owners_all.shepherd(pool) in self.departing

    def _prune_departing(self) -> None:
        now = time.monotonic()
        for name, until in list(self.departing.items()):
            state = self.node.core.state_of(name)
            if until <= now or state is None or not state.live:
                del self.departing[name]  # gone for real now, or it never left: forget it

    def offers(self) -> tuple[HostOffer, ...]:
        out = []
        for member in self.live_members():
            capacity = member.meta.get("capacity") if isinstance(member.meta, dict) else None
            if not isinstance(capacity, dict) or not capacity.get("vcpus"):
                continue  # not yet announced its capacity: nothing to place there
            labels = member.meta.get("labels") or []
            out.append(
                HostOffer(
                    member.name,
                    int(capacity.get("vcpus", 0)),
                    int(capacity.get("memory_mib", 0)),
                    _free_memory_mib(capacity),
                    frozenset(str(label) for label in labels),
                    _disk_free_mib(capacity),
                )
            )
        return tuple(out)

    def shepherd_for(self, pool: str) -> str | None:
        live = frozenset(m.name for m in self.live_members())
        if live != self._owners.members:
            self._owners = Owners(live)
        return self._owners.shepherd(pool)

    def _address(self, name: str) -> tuple[str, int] | None:
        member = self.node.core.member(name)
        return (member.addr[0], member.addr[1]) if member is not None else None

    def _view_changed(self) -> None:
        if not self._view_pending:
            self._view_pending = True
            self._loop.call_soon(self._apply_view)

    def _apply_view(self) -> None:
        from sdmesh.pools import shepherd as sc

        self._view_pending = False
        if self.leaving:
            return  # the hand-over (leave) owns our pools now; our own host is not an offer
        self._prune_departing()
        offers, away = self.offers(), self.away_hosts()
        quorate = self.has_quorum()
        was_paused = self._gate.paused
        dead = [m.name for m in self.node.core.members() if m.state is State.DEAD]
        may_act = self._gate.observe(quorate, dead, self._loop.time())
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        recheck = self._gate.recheck_at()
        if recheck is not None:
            self._recheck = self._loop.call_at(recheck, self._view_changed)
        if not may_act and not was_paused and self.shepherding:
            log.warning(
                "this agent sees no majority of the mesh: its %d pools pause (no order, no "
                "move) until it does",
                len(self.shepherding),
            )
        for pool in list(self.shepherding):
            if not may_act:
                self._pause(pool)
                self._feed(pool, sc.MembersChanged(offers, away))  # kept for the resume
            elif self.shepherd_for(pool) != self.name:
                log.info(
                    "pool %s: %s is its shepherd now; handing over", pool, self.shepherd_for(pool)
                )
                self._stop_shepherding(pool)
            else:
                self._feed(pool, sc.MembersChanged(offers, away))
                run = self.shepherding[pool]
                if run.core.paused and not run.resuming:
                    run.resuming = True
                    self._spawn(self._resume(pool, run))
        if not quorate or not may_act:
            return
        for pool, known in self.known.items():
            if (
                pool not in self.shepherding
                and pool not in self.tombs
                and known.state not in ("terminated", "failed")
                and self.shepherd_for(pool) == self.name
                and not self._being_handed_over(pool)
            ):
                self._start_take_over(pool)

    # ===================================================================== rumors
    def _on_rumor(self, rumor: Any) -> None:
        if rumor.topic not in (TOPIC_POOL, TOPIC_TOMB):
            return
        try:
            body = msgpack.unpackb(rumor.payload, raw=False)
        except Exception as error:  # msgpack raises several unrelated types
            log.debug("undecodable %s rumor for %s: %s", rumor.topic, rumor.key, error)
            return
        if not isinstance(body, dict):
            log.debug("malformed %s rumor for %s: %r", rumor.topic, rumor.key, body)
            return
        if rumor.topic == TOPIC_POOL:
            generation = body.get("generation")
            known = _Known(
                str(body.get("digest", "")),
                str(body.get("state", "")),
                str(body.get("shepherd", "")),
                time.monotonic(),
                generation if isinstance(generation, int) else 0,
            )
            self.known[rumor.key] = known
            tomb = self.tombs.get(rumor.key)
            if tomb is not None and tomb.superseded_by(known.state, known.generation):
                log.info(
                    "pool %s: submitted again (generation %d) after its termination",
                    rumor.key,
                    known.generation,
                )
                del self.tombs[rumor.key]
            self._view_changed()
        else:
            known_gen = self.known[rumor.key].generation if rumor.key in self.known else 0
            self._heard_tomb(rumor.key, Tomb.generation_of(body, known_gen))

    def _heard_tomb(self, pool: str, generation: int) -> bool:
        """A termination record: applied unless a resubmission is known to be newer (an
        old tombstone heard late must not end the new pool of the same name). Whether it
        was applied now."""
        old = self.tombs.get(pool)
        if old is not None and old.generation >= generation:
            return False
        tomb = Tomb(generation, time.monotonic())
        known = self.known.get(pool)
        if known is not None and tomb.superseded_by(known.state, known.generation):
            log.info("pool %s: a termination older than its resubmission: ignored", pool)
            return False
        self.tombs[pool] = tomb
        self._tombstone(pool, tomb)
        return True

    def _publish(self, topic: str, pool: str, body: dict[str, object]) -> None:
        self.node.publish(topic, pool, bytes(msgpack.packb(body, use_bin_type=True)))

    def _tombstone(self, pool: str, tomb: Tomb) -> None:
        """Terminate through the shepherd if we are it; hosts tear down after a grace."""
        from sdmesh.pools import shepherd as sc

        if pool in self.shepherding:
            self._feed(pool, sc.TerminateRequested("terminated on request"))
        self._loop.call_later(TOMBSTONE_GRACE, self._tomb_due, pool, tomb)

    def _tomb_due(self, pool: str, tomb: Tomb) -> None:
        if self.tombs.get(pool) is tomb:  # not superseded by a resubmission meanwhile
            self._host_feed(hc.PoolTerminated(pool, tomb.generation))

    # ================================================================== host side
    def _host_feed(self, event: hc.Event) -> list[hc.Answer]:
        answers = []
        for action in self.host.handle(event):
            if isinstance(action, hc.Answer):
                answers.append(action)
            elif isinstance(action, hc.RunLeaf):
                self._spawn(self._run_leaf(action))
            elif isinstance(action, hc.SendReport):
                self._queue_report(action.shepherd, action.report)
        return answers

    def take_orders(self, orders: list[Order]) -> list[list[object]]:
        out: list[list[object]] = []
        for order in orders:
            tomb = self.tombs.get(order.pool)
            if tomb is not None and tomb.covers(order.generation) and order.op != "terminate":
                out.append(["refused", "the pool was terminated", 0])
                continue
            if self.host.resubmitted(order):
                self._forget_descriptor(order.pool)  # the name's earlier pool had another
            self._digests.setdefault(order.pool, order.digest)
            answers = self._host_feed(hc.OrderReceived(order))
            answer = answers[0] if answers else None
            if answer is None:
                out.append(["accepted", "", 0])
            else:
                out.append([answer.outcome, answer.reason, answer.seen])
        return out

    def _forget_descriptor(self, pool: str) -> None:
        """A resubmission under the name of an ended pool: its spec and tree are the new
        descriptor's (leftovers of the old one are removed by their libvirt tags)."""
        self._digests.pop(pool, None)
        hosted = self._host_pools.pop(pool, None)
        if hosted is not None:
            self._spawn(hosted.context.close())

    async def _run_leaf(self, action: hc.RunLeaf) -> None:
        from sdmesh.lifecycle.model import TerminationRecord
        from sdmesh.runner.app import ComponentError

        error: str | None = None
        began = time.monotonic()
        try:
            hosted = await self._hosted(action.pool)
            hosted.context.generation = action.generation
            began = time.monotonic()  # the leaf's own work: not the spec's first DHT read
            self._leaf_op(action, None, None)
            if action.op == "deploy":
                error = await self._deploy(hosted, action)
            elif action.op == "start":
                component = hosted.components.get(action.path)
                if component is None:
                    error = f"{action.path} was not deployed on {self.name}"
                else:
                    await component.start()
            else:
                component = hosted.components.pop(action.path, None)
                if component is not None:
                    await component.terminate(TerminationRecord.normal_end("terminated"))
                else:
                    await self._remove_by_tags(action.pool, action.path)
        except ComponentError as failure:
            error = str(failure)
        except PoolError as failure:
            error = str(failure)
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            log.exception("%s of %s failed", action.op, action.path)
            error = f"internal error during {action.op}: {type(failure).__name__}: {failure}"
        if action.op == "terminate":
            error = None  # whatever is left is the reaper's; the leaf is gone for the pool
        self._leaf_op(action, time.monotonic() - began, error)
        self._host_feed(hc.LeafFinished(action.pool, action.path, action.op, error))

    def _leaf_op(self, action: hc.RunLeaf, seconds: float | None, error: str | None) -> None:
        """Tell ``leaf_listeners`` a leaf operation started (no ``seconds``) or ended."""
        if not self.leaf_listeners:
            return
        from sdmesh.components.registry import VIRTUAL_MACHINE

        hosted = self._host_pools.get(action.pool)
        node = hosted.nodes.get(action.path) if hosted is not None else None
        sf_class = node.description.get("sfClass") if node is not None else None
        sf_class = sf_class if isinstance(sf_class, str) else ""
        if seconds is None:
            state = {"deploy": "deploying", "start": "starting"}.get(action.op, "terminating")
        elif error is not None:
            state = "failed"
        else:
            state = {"deploy": "deployed", "start": "running"}.get(action.op, "terminated")
        op = LeafOp(
            action.pool,
            action.path,
            action.op,
            state,
            hosted.spec.kinds.get(action.path, "Component") if hosted is not None else "",
            sf_class,
            _domain_name(action.pool, action.path, sf_class == VIRTUAL_MACHINE),
            seconds,
            error,
        )
        for listener in self.leaf_listeners:
            try:
                listener(op)
            except Exception:  # an observer's bug must not fail the leaf
                log.exception("leaf listener failed")

    async def _deploy(self, hosted: _HostPool, action: hc.RunLeaf) -> str | None:
        from sdmesh.components.registry import component_factory

        node = hosted.nodes.get(action.path)
        if node is None:
            return f"{action.path} is not a component of pool {action.pool}"
        pool, path = action.pool, action.path

        def ended(record: Any) -> None:
            self._host_feed(hc.LeafDied(pool, path, record.description))

        component = component_factory(hosted.context)(node, hosted.root, hosted.components, ended)
        hosted.components[path] = component
        try:
            await component.deploy()
        except BaseException:
            hosted.components.pop(path, None)
            with contextlib.suppress(Exception):
                from sdmesh.lifecycle.model import TerminationRecord

                await component.terminate(TerminationRecord.abnormal("deploy failed"))
            raise
        return None

    async def _hosted(self, pool: str) -> _HostPool:
        hosted = self._host_pools.get(pool)
        if hosted is not None:
            return hosted
        from sdmesh.components.context import HostContext
        from sdmesh.pools.layout import skeleton, walk

        digest = self._digests.get(pool)
        if digest is None:
            raise PoolError(f"no descriptor known for pool {pool}")
        spec = await self.spec(digest, pool)
        root = skeleton(await tree_of(spec))
        hosted = self._host_pools.get(pool)
        if hosted is None:
            context = HostContext(
                driver=self.driver,
                caps=self.caps,
                state_dir=self.state_dir / "volumes",
                pool=pool,
                generation=0,
                descriptor_hash=f"sha256:{digest}",
                node_name=self.name,
            )
            nodes = {node.path: node for node in walk(root)}
            hosted = self._host_pools[pool] = _HostPool(spec, root, nodes, context)
        return hosted

    async def _remove_by_tags(self, pool: str, path: str) -> None:
        """Tear down a leaf whose component is not in memory (recovered after a restart)."""
        from sdmesh.components.context import HostContext

        for domain in await self.driver.list_managed(pool):
            if domain.metadata.path == path:
                with contextlib.suppress(Exception):
                    await self.driver.destroy(domain.name)
        context = HostContext(self.driver, self.caps, self.state_dir / "volumes", pool, 0, "")
        for keeper in context.keepers():
            for volume in await keeper.list_owned(pool):
                if volume.owner.path == path:
                    with contextlib.suppress(Exception):
                        await keeper.release(volume)

    async def _recover(self) -> None:
        """Leaves this host runs, from libvirt metadata and volume tags."""
        from sdmesh.components.context import HostContext

        found = 0
        for domain in await self.driver.list_managed():
            meta = domain.metadata
            if not meta.pool:
                continue
            self.host.handle(
                hc.Recovered(
                    meta.pool,
                    meta.path,
                    meta.path,
                    meta.generation,
                    "",
                    domain.vcpus,
                    domain.memory_mib,
                )
            )
            found += 1
        context = HostContext(self.driver, self.caps, self.state_dir / "volumes", "", 0, "")
        for keeper in context.keepers():
            for volume in await keeper.list_owned():
                owner = volume.owner
                self.host.handle(
                    hc.Recovered(owner.pool, owner.path, owner.path, owner.generation, "")
                )
                found += 1
        if found:
            log.info(
                "recovered %d leaves of %d pools from libvirt", found, len(self.host.pools_held())
            )

    def _queue_report(self, shepherd: str, report: Report, attempt: int = 0) -> None:
        target = shepherd or self.shepherd_for(report.pool) or ""
        if target == self.name:
            if self._deliver_reports([report]):
                self._report_later(report, attempt)  # not ours (yet): a takeover may follow
            return
        if not target:
            self._report_later(report, attempt)
            return
        self._reports[target].append((report, attempt))
        if self._report_task is None or self._report_task.done():
            self._report_task = self._spawn(self._flush_reports())

    def _report_later(self, report: Report, attempt: int) -> None:
        """Until the pool's shepherd takes the report (a VM death noticed by nobody is never
        restarted), with a bounded backoff; then the inventory reconciles the same."""
        known = self.known.get(report.pool)
        if (
            attempt + 1 >= REPORT_ATTEMPTS
            or report.pool not in self.host.pools
            or report.pool in self.tombs
            or (known is not None and known.state in hc.ENDED_STATES)
        ):
            if attempt + 1 >= REPORT_ATTEMPTS:
                log.warning(
                    "pool %s: no shepherd took the report on %s (%s); left to the inventory",
                    report.pool,
                    report.path,
                    report.op,
                )
            return
        self._loop.call_later(
            retry_delay(attempt), lambda: self._queue_report("", report, attempt + 1)
        )

    async def _flush_reports(self) -> None:
        await asyncio.sleep(0)  # let a burst of reports gather into one request per shepherd
        while self._reports:
            batches, self._reports = self._reports, defaultdict(list)
            await asyncio.gather(
                *(self._send_reports(target, batch) for target, batch in batches.items())
            )

    async def _send_reports(self, target: str, batch: list[tuple[Report, int]]) -> None:
        addr = self._address(target)
        reply: object = None
        if addr is not None:
            try:
                reply = await self.client.request(
                    addr,
                    {"rpc": "reports", "reports": [r.to_wire() for r, _ in batch]},
                    timeout=RPC_TIMEOUT,
                )
            except (StreamError, OSError) as error:
                log.debug("reports to %s failed: %s", target, error)
        if not isinstance(reply, dict) or not reply.get("ok"):
            unknown = {report.pool for report, _ in batch}
        else:  # an agent from before "unknown" was answered took them all
            listed = reply.get("unknown")
            unknown = {str(p) for p in listed} if isinstance(listed, list) else set()
        for report, attempt in batch:
            if report.pool in unknown:
                self._report_later(report, attempt)

    def _deliver_reports(self, reports: list[Report]) -> list[str]:
        """Feed reports to the pools shepherded here; the pools of the others."""
        from sdmesh.pools import shepherd as sc

        unknown: list[str] = []
        for report in reports:
            if report.pool in self.shepherding:
                self._feed(report.pool, sc.Reported(report))
            elif report.pool not in unknown:
                unknown.append(report.pool)
        return unknown

    # ============================================================= shepherd side
    def _start_take_over(self, pool: str) -> None:
        """Take the pool over, unless a takeover of it is under way already or waits for its
        retry (which looks at the view again when due)."""
        running = self._takeovers.get(pool)
        if (running is not None and not running.done()) or pool in self._takeover_retry:
            return
        task = self._spawn(self._take_over(pool))
        self._takeovers[pool] = task
        task.add_done_callback(lambda done: self._takeover_ended(pool, done))

    def _takeover_ended(self, pool: str, task: asyncio.Task[None]) -> None:
        if self._takeovers.get(pool) is task:
            del self._takeovers[pool]

    def _retry_take_over(self, pool: str, why: str) -> None:
        """No usable record to take the pool over from: try again later, backing off (a
        warning the first time, then quietly)."""
        misses = self._takeover_misses.get(pool, 0)
        self._takeover_misses[pool] = misses + 1
        delay = retry_delay(misses, TAKEOVER_RETRY_FIRST, TAKEOVER_RETRY_MOST)
        level = logging.WARNING if misses == 0 else logging.DEBUG
        log.log(level, "pool %s: cannot take it over: %s; trying again in %.0f s", pool, why, delay)
        old = self._takeover_retry.pop(pool, None)
        if old is not None:
            old.cancel()
        self._takeover_retry[pool] = self._loop.call_later(delay, self._takeover_due, pool)

    def _takeover_due(self, pool: str) -> None:
        self._takeover_retry.pop(pool, None)
        self._view_changed()  # still ours, still without a shepherd: taken over from there

    async def _take_over(self, pool: str) -> None:
        """Become the pool's shepherd from its record in the DHT (a higher generation). Our
        own record file only counts when the DHT answered and had no newer one: when the
        lookup failed, it may be stale (another shepherd ran the pool since)."""
        if pool in self.shepherding or self.leaving or not self.has_quorum():
            return
        answered, record = await self.lookup_record(pool)
        if not answered:
            self._retry_take_over(pool, "its record could not be read from the DHT")
            return
        local = await self._local_record(pool)
        if local is not None and (record is None or local.generation > record.generation):
            record = local  # our last save did not reach the DHT (or is newer than its copy)
        if record is None:
            self._retry_take_over(pool, "no record in the DHT yet")
            return
        if record.state in ("terminated", "failed") or pool in self.shepherding:
            self._takeover_misses.pop(pool, None)
            return
        if self.shepherd_for(pool) != self.name or self.leaving or not self.has_quorum():
            return
        try:
            spec = await self.spec(record.digest, pool)
            await tree_of(spec)
        except PoolError as error:
            self._retry_take_over(pool, str(error))
            return
        if self.shepherd_for(pool) != self.name or self.leaving or not self.has_quorum():
            return  # the view changed while the descriptor was read and resolved
        self._takeover_misses.pop(pool, None)
        await self._shepherd(spec, record.generation + 1, record)
        log.info("pool %s: took over as shepherd at generation %d", pool, record.generation + 1)

    async def _shepherd(
        self,
        spec: PoolSpec,
        generation: int,
        old: PoolRecord | None,
        vouched: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Run the pool's shepherd core here (no await inside: a hand-over adopts its pools
        at once). ``vouched``: what a leaving predecessor's host runs of it."""
        from sdmesh.pools import shepherd as sc
        from sdmesh.pools.layout import layout

        if spec.pool in self.shepherding or self.leaving:
            return
        tree = spec_tree(spec)
        record = PoolRecord(
            spec.pool,
            spec.digest,
            generation,
            self.name,
            old.state if old is not None else "deploying",
            dict(old.placement) if old is not None else {},
            old.reason if old is not None else "",
            away=dict(old.away) if old is not None else {},
            vouched=dict(old.vouched) if old is not None else {},
        )
        if record.state == "running":
            record = PoolRecord(**{**record.__dict__, "state": "deploying"})
        wall_offset = time.time() - self._loop.time()  # the record's grace ends: wall clock
        offers = self.offers()
        core = sc.Shepherd(record, tree, layout(tree), spec.kinds, offers, wall_offset)
        self.shepherding[spec.pool] = _Shepherding(core)
        self._feed(spec.pool, sc.MembersChanged(offers, self.away_hosts()))
        self._feed(spec.pool, sc.Begin(vouched or {}))
        if spec.pool in self.tombs:
            self._feed(spec.pool, sc.TerminateRequested("terminated on request"))

    def _stop_shepherding(self, pool: str) -> None:
        run = self.shepherding.pop(pool, None)
        if run is not None:
            for handle in run.timers.values():
                handle.cancel()
            if run.flushing is not None and not run.flushing.done():
                run.flushing.cancel()  # what it queued must not go out any more

    def _pause(self, pool: str) -> None:
        """No majority: the core decides nothing until ``Resume``, and what it had queued
        (orders, a save) is dropped; the core resends it on resume."""
        from sdmesh.pools import shepherd as sc

        run = self.shepherding.get(pool)
        if run is None or run.core.paused:
            return
        run.core.handle(sc.Pause(), self._loop.time())
        run.orders.clear()
        run.save = None

    async def _resume(self, pool: str, run: _Shepherding) -> None:
        """The majority is back: go on with the same core, unless another shepherd took the
        pool over meanwhile (a newer record): then its state is stale, take it over again."""
        from sdmesh.pools import shepherd as sc

        try:
            stored = await self.read_record(pool, newest=True)
        finally:
            run.resuming = False
        if self.shepherding.get(pool) is not run or not run.core.paused or self._gate.paused:
            return
        if stored is not None and run.core.superseded_by(stored):
            log.info(
                "pool %s: shepherded at generation %d while this agent had no majority; "
                "taking it over again",
                pool,
                stored.generation,
            )
            self._stop_shepherding(pool)
            self._start_take_over(pool)
            return
        log.info(
            "pool %s: majority back, shepherding on at generation %d", pool, run.core.generation
        )
        self._feed(pool, sc.Resume())

    def _feed(self, pool: str, event: sc.Event) -> None:
        run = self.shepherding.get(pool)
        if run is None:
            return
        for action in run.core.handle(event, self._loop.time()):
            self._shepherd_action(pool, run, action)
        idle = run.flushing is None or run.flushing.done()
        if (run.save is not None or run.orders) and idle:
            run.flushing = self._spawn(self._flush(pool, run))

    def _shepherd_action(self, pool: str, run: _Shepherding, action: sc.Action) -> None:
        from sdmesh.pools import shepherd as sc

        if isinstance(action, sc.SaveRecord):
            run.save = action.record
        elif isinstance(action, sc.SendOrder):
            run.orders[action.host].append(action.order)
        elif isinstance(action, sc.SetTimer):
            old = run.timers.pop(action.name, None)
            if old is not None:
                old.cancel()
            run.timers[action.name] = self._loop.call_at(action.at, self._timer, pool, action.name)
        elif isinstance(action, sc.ComponentChanged):
            event = {
                "pool": pool,
                "path": action.path,
                "kind": action.kind,
                "state": action.state,
                "host": action.host,
                "domain": _domain_name(pool, action.path, action.path in run.core.layout.units),
            }
            self._emit(run, event)
        elif isinstance(action, sc.PoolChanged):
            log.info("pool %s: %s %s", pool, action.state, action.reason)
            self._publish(
                TOPIC_POOL,
                pool,
                {
                    "digest": run.core.digest,
                    "state": action.state,
                    "shepherd": self.name,
                    "generation": run.core.generation,
                },
            )
            self._emit(
                run,
                {
                    "pool": pool,
                    "state": action.state,
                    "reason": action.reason,
                    "generation": run.core.generation,
                },
            )
            if action.state in ("terminated", "failed"):
                self._loop.call_soon(self._finished, pool)
        elif isinstance(action, sc.Warning):
            log.warning("pool %s: %s: %s", pool, action.path, action.message)

    def _emit(self, run: _Shepherding, event: Mapping[str, object]) -> None:
        event = dict(event)
        run.events.append(event)
        del run.events[:-4096]
        for listener in self.listeners:
            listener(event)

    def _timer(self, pool: str, name: str) -> None:
        from sdmesh.pools import shepherd as sc

        run = self.shepherding.get(pool)
        if run is not None:
            run.timers.pop(name, None)
            self._feed(pool, sc.TimerFired(name))

    def _finished(self, pool: str) -> None:
        run = self.shepherding.get(pool)
        if run is not None and (run.flushing is None or run.flushing.done()):
            self._stop_shepherding(pool)
            self._finished_runs[pool] = run
        elif run is not None:
            self._loop.call_later(0.2, self._finished, pool)

    async def _flush(self, pool: str, run: _Shepherding) -> None:
        """Save the record first (orders depend on it), then send each host its orders."""
        from sdmesh.pools import shepherd as sc

        await asyncio.sleep(0)
        while run.save is not None or run.orders:
            if self.shepherding.get(pool) is not run or run.core.paused:
                return  # stopped or without a majority: nothing queued may go out
            record, run.save = run.save, None
            if record is not None:
                await self.write_record(record)
            if self.shepherding.get(pool) is not run or run.core.paused:
                return
            batches, run.orders = run.orders, defaultdict(list)
            results = await asyncio.gather(
                *(self._send_orders(host, orders) for host, orders in batches.items())
            )
            if self.shepherding.get(pool) is not run:
                return
            for (host, orders), answers in zip(batches.items(), results, strict=True):
                for order, answer in zip(orders, answers, strict=True):
                    outcome, reason, seen = answer
                    if outcome != "accepted":
                        self._feed(pool, sc.Answered(host, order, outcome, reason, seen))

    async def _send_orders(self, host: str, orders: list[Order]) -> list[list[Any]]:
        if host == self.name:
            return self.take_orders(orders)
        addr = self._address(host)
        unreachable: list[list[Any]] = [["unreachable", "", 0] for _ in orders]
        if addr is None:
            return unreachable
        try:
            reply = await self.client.request(
                addr,
                {"rpc": "orders", "orders": [o.to_wire() for o in orders]},
                timeout=RPC_TIMEOUT,
            )
        except (StreamError, OSError) as error:
            log.debug("orders to %s failed: %s", host, error)
            return unreachable
        answers = reply.get("answers") if isinstance(reply, dict) else None
        if not isinstance(answers, list) or len(answers) != len(orders):
            return unreachable
        return [
            a if isinstance(a, list) and len(a) == 3 else ["unreachable", "", 0] for a in answers
        ]

    # ============================================================ leaving the mesh
    async def leave(self) -> dict[str, str]:
        """Run before the agent announces its leave (``sdmesh leave``, SIGTERM): admit no
        new unit, let this host's leaf operations under way finish, hand every pool this
        agent shepherds to its successor, deliver the last reports. Bounded: a pool whose
        hand-over nobody confirms is taken over from its saved record once the leave shows.

        The host's own VMs stay and keep running: a leave is not a drain. Shepherds keep
        them placed here for ``AWAY_GRACE`` (a restart or an upgrade of the agent), then
        treat them as lost, as after a death. Returns pool -> the successor that took it
        ("" when none confirmed)."""
        self.leaving = True
        self._host_feed(hc.Leaving())
        deadline = self._loop.time() + LEAVE_DRAIN
        while self.host.busy() and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
        handed = await self._hand_over_all()
        if self._report_task is not None and not self._report_task.done():
            await asyncio.wait({self._report_task}, timeout=1.0)
        return handed

    async def _hand_over_all(self) -> dict[str, str]:
        from sdmesh.pools import shepherd as sc

        live = self.live_members()  # without us: we are leaving
        members = [m.name for m in live]
        suspects = [m.name for m in live if m.state is not State.ALIVE]
        handed: dict[str, tuple[PoolRecord, list[str]]] = {}
        for pool, run in list(self.shepherding.items()):
            if run.core.ended:
                continue
            candidates = successors(pool, members, self.name, suspects)
            actions = run.core.handle(
                sc.HandOver(candidates[0] if candidates else ""), self._loop.time()
            )
            self._stop_shepherding(pool)  # before anything can answer it: it must stay quiet
            for action in actions:
                if isinstance(action, sc.HandOff):
                    handed[pool] = (action.record, candidates)
        if not handed:
            return {}
        outcome = dict.fromkeys(handed, "")
        # The freshest records go to the DHT too: if no successor confirms, whoever takes a
        # pool over once our leave shows starts from there.
        saving = self._spawn(self._write_records([record for record, _ in handed.values()]))
        deadline = self._loop.time() + HANDOVER_TIMEOUT
        pending = dict(handed)
        for attempt in range(3):  # the successor, then the next ones if it cannot take them
            batches: dict[str, list[PoolRecord]] = defaultdict(list)
            for record, candidates in pending.values():
                if attempt < len(candidates):
                    batches[candidates[attempt]].append(record)
            if not batches or self._loop.time() >= deadline:
                break
            # Each attempt gets its share: a successor that does not answer must not use up
            # the time the next one needs.
            step = min(deadline, self._loop.time() + HANDOVER_ATTEMPT)
            results = await asyncio.gather(
                *(self._offer(target, records, step) for target, records in batches.items())
            )
            for target, taken in zip(batches, results, strict=True):
                for pool, generation in taken.items():
                    if pending.pop(pool, None) is not None:
                        outcome[pool] = target
                        log.info(
                            "pool %s: handed over to %s (generation %d)", pool, target, generation
                        )
        for pool in pending:
            log.warning(
                "pool %s: no successor confirmed the hand-over; it will be taken over from its "
                "saved record once this agent's leave is seen",
                pool,
            )
        await asyncio.wait({saving}, timeout=max(0.1, deadline - self._loop.time()))
        return outcome

    async def _write_records(self, records: list[PoolRecord]) -> None:
        await asyncio.gather(*(self.write_record(record) for record in records))

    async def _offer(
        self, target: str, records: list[PoolRecord], deadline: float
    ) -> dict[str, int]:
        """Ask ``target`` to take these pools over; the pools it confirms -> its generation."""
        addr = self._address(target)
        if addr is None:
            return {}
        items: list[tuple[int, dict[str, object]]] = []
        for record in records:
            try:  # bounded: a DHT read must not hold the leave past systemd's stop timeout
                left = max(0.01, deadline - self._loop.time())
                spec = await asyncio.wait_for(self.spec(record.digest, record.pool), left)
            except (PoolError, TimeoutError):
                continue  # the successor reads it from the DHT record when it takes over
            data = spec.encode()
            leaves = self.host.holdings(spec.pool)
            items.append((len(data), {"spec": data, "record": record.encode(), "leaves": leaves}))
        taken: dict[str, int] = {}
        batch: list[dict[str, object]] = []
        size = 0
        for length, item in items:
            if batch and size + length > HANDOVER_BATCH_BYTES:
                taken.update(await self._offer_batch(addr, batch, deadline))
                batch, size = [], 0
            batch.append(item)
            size += length
        if batch:
            taken.update(await self._offer_batch(addr, batch, deadline))
        return taken

    async def _offer_batch(
        self, addr: tuple[str, int], items: list[dict[str, object]], deadline: float
    ) -> dict[str, int]:
        timeout = deadline - self._loop.time()
        if timeout <= 0:
            return {}
        request = {"rpc": "handover", "from": self.name, "pools": items}
        try:
            reply = await self.client.request(addr, request, timeout=timeout)
        except (StreamError, OSError) as error:
            log.debug("hand-over to %s failed: %s", addr, error)
            return {}
        taken = reply.get("taken") if isinstance(reply, dict) else None
        if not isinstance(taken, dict):
            log.info("hand-over refused: %s", reply)
            return {}
        return {str(k): int(v) for k, v in taken.items() if isinstance(v, int)}

    async def _adopt(self, request: Mapping[str, Any]) -> dict[str, object]:
        """A leaving shepherd hands us its pools: take each over at a higher generation than
        the record it sends (its freshest state), trusting what its host says it runs."""
        sender = str(request.get("from", ""))
        if self.leaving or not self.has_quorum() or not sender or sender == self.name:
            return {"error": f"{self.name} cannot take pools over now"}
        self.departing[sender] = time.monotonic() + DEPARTING_TTL
        self._loop.call_later(DEPARTING_TTL, self._view_changed)
        taken: dict[str, int] = {}
        for item in request.get("pools", []):
            try:  # one bad item must not undo the others (they are adopted already)
                spec = PoolSpec.decode(item["spec"])
                record = PoolRecord.decode(item["record"])
                leaves = item.get("leaves") or {}
            except (RecordFormatError, KeyError, TypeError) as error:
                log.warning("hand-over from %s: a malformed pool: %s", sender, error)
                continue
            if spec.pool != record.pool or spec.digest != record.digest:
                continue
            if not isinstance(leaves, dict) or record.state in ("terminated", "failed"):
                continue
            self._specs[spec.digest] = spec
            if spec.pool not in self.shepherding:
                try:
                    await tree_of(spec)  # off the loop; _shepherd finds it resolved
                except PoolError as error:
                    log.warning("hand-over from %s: %s", sender, error)
                    continue
                local = await self._local_record(spec.pool)
                base = (
                    local if local is not None and local.generation > record.generation else record
                )
                vouched = {
                    str(k): str(v) for k, v in leaves.items() if v in ("deployed", "running")
                }
                self.known[spec.pool] = _Known(spec.digest, base.state, self.name, time.monotonic())
                await self._shepherd(spec, base.generation + 1, base, {sender: vouched})
            run = self.shepherding.get(spec.pool)
            if run is not None:
                taken[spec.pool] = run.core.generation
                log.info(
                    "pool %s: %s handed it over; shepherd at generation %d",
                    spec.pool,
                    sender,
                    run.core.generation,
                )
        self._view_changed()
        return {"taken": taken}

    async def _local_record(self, pool: str) -> PoolRecord | None:
        """Our own last record of the pool (the fallback file), read off the loop."""
        data = await asyncio.to_thread(_read_file, self.state_dir / "specs" / f"{pool}.record")
        if data is not None:
            with contextlib.suppress(RecordFormatError):
                return PoolRecord.decode(data)
        return None

    async def _write_file(self, path: Path, data: bytes) -> None:
        """Write ``path`` in a worker thread, after the writes asked before (atomically: a
        reader never sees half a record)."""
        async with self._file_writes:
            await asyncio.to_thread(_write_atomically, path, data)

    # ================================================================ DHT storage
    async def write_blob(self, key: str, data: bytes, generation: int) -> None:
        """Raises ``NotStored`` when some part reached no replica (``put`` returned 0: nobody
        answered, or every replica holds a newer version): the write did not happen."""
        if len(data) <= CHUNK_BYTES:
            _stored(key, await self.dht.put(key, b"\x00" + data, generation))
            return
        chunks = split_blob(data)
        counts = await asyncio.gather(
            *(self.dht.put(f"{key}#{i}", chunk, generation) for i, chunk in enumerate(chunks))
        )
        for i, count in enumerate(counts):
            _stored(f"{key}#{i}", count)
        _stored(key, await self.dht.put(key, b"\x01" + blob_head(chunks), generation))

    async def read_blob(self, key: str, quorum: int | None = 1) -> bytes | None:
        """``quorum=None`` hears from every replica: the newest version, not the first."""
        found = await self.dht.get(key, quorum=quorum)
        if found is None:
            found = self.dht.local_record(key)
        if found is None or not found.value:
            return None
        if found.value[:1] == b"\x00":
            return found.value[1:]
        count, sha = read_blob_head(found.value[1:])
        parts = await asyncio.gather(*(self.dht.get(f"{key}#{i}", quorum=1) for i in range(count)))
        if any(part is None for part in parts):
            return None
        return join_blob([part.value for part in parts if part is not None], sha)

    async def write_record(self, record: PoolRecord) -> bool:
        """Store the record in the DHT and the local fallback file; one that is not stored
        is retried in the background (backoff) until it is, or a newer one replaces it: a
        pool that stays running saves nothing more, and a takeover must not start from an
        older record. Whether it was stored now."""
        if await self._store_record(record):
            if self._unsaved.get(record.pool) is record:
                del self._unsaved[record.pool]
            return True
        pending = self._unsaved.get(record.pool)
        if pending is None or pending.generation <= record.generation:
            self._unsaved[record.pool] = record
        if self._saver is None or self._saver.done():
            self._saver = self._spawn(self._save_unsaved())
        return False

    async def _store_record(self, record: PoolRecord) -> bool:
        data = record.encode()
        stored = True
        try:
            await self._write_file(self.state_dir / "specs" / f"{record.pool}.record", data)
        except OSError as error:
            log.warning("pool %s: could not write its record file: %s", record.pool, error)
            stored = False
        try:
            await self.write_blob(f"pool/{record.pool}", data, record.generation)
        except Exception as error:
            log.warning("pool %s: could not store its record in the DHT: %s", record.pool, error)
            stored = False
        return stored

    async def _save_unsaved(self) -> None:
        attempt = 0
        while self._unsaved:
            await asyncio.sleep(retry_delay(attempt))
            attempt += 1
            for pool, record in list(self._unsaved.items()):
                stored = await self._store_record(record)
                if not stored:
                    answered, newest = await self.lookup_record(pool)
                    stored = (
                        answered and newest is not None and (newest.generation > record.generation)
                    )  # a successor saved a newer one: ours is moot
                if stored and self._unsaved.get(pool) is record:
                    del self._unsaved[pool]

    async def lookup_record(self, pool: str) -> tuple[bool, PoolRecord | None]:
        """The pool's newest record from every replica, and whether the DHT answered at all:
        (True, None) is a definite "not found", which ``read_record`` cannot tell from a
        failed lookup. A DHT with no contact answers nothing (this node alone is the whole
        DHT only when no other member is alive)."""
        try:
            data = await self.read_blob(f"pool/{pool}", None)
        except Exception as error:
            log.debug("pool %s: record lookup failed: %s", pool, error)
            return False, None
        if data is None and not self.dht.contacts() and len(self.live_members()) > 1:
            return False, None
        try:
            return True, PoolRecord.decode(data) if data is not None else None
        except RecordFormatError as error:
            log.warning("pool %s: its record in the DHT is malformed: %s", pool, error)
            return False, None

    async def read_record(self, pool: str, *, newest: bool = False) -> PoolRecord | None:
        """The pool's record: the DHT's or our own last one, the higher generation. With
        ``newest`` every replica is heard (a takeover must not start from a stale copy)."""
        data: bytes | None = None
        with contextlib.suppress(Exception):
            data = await self.read_blob(f"pool/{pool}", None if newest else 1)
        records = []
        if data is not None:
            with contextlib.suppress(RecordFormatError):
                records.append(PoolRecord.decode(data))
        local = await self._local_record(pool)
        if local is not None:
            records.append(local)
        return max(records, key=lambda r: r.generation, default=None)

    async def store_spec(self, spec: PoolSpec) -> None:
        data = spec.encode()
        self._specs[spec.digest] = spec
        await self._write_file(self.state_dir / "specs" / f"{spec.digest}.spec", data)
        for attempt in range(4):  # a pool whose spec is not stored cannot be taken over
            try:
                await self.write_blob(f"spec/{spec.digest}", data, 1)
                return
            except NotStored as error:
                log.warning("pool %s: its descriptor is not stored yet: %s", spec.pool, error)
                await asyncio.sleep(retry_delay(attempt, first=0.5))
        raise PoolError(f"pool {spec.pool}: the DHT did not store its descriptor", 503)

    async def spec(self, digest: str, pool: str | None = None) -> PoolSpec:
        """The spec stored under ``digest``, named ``pool`` when given: pools submitted from
        the same descriptor share one digest, and the stored spec names whichever came first."""
        spec = await self._spec(digest)
        return spec if pool is None or spec.pool == pool else dataclasses.replace(spec, pool=pool)

    async def _spec(self, digest: str) -> PoolSpec:
        cached = self._specs.get(digest)
        if cached is not None:
            return cached
        path = self.state_dir / "specs" / f"{digest}.spec"
        data = await asyncio.to_thread(_read_file, path)
        from_file = data is not None
        if data is None:
            data = await self.read_blob(f"spec/{digest}")
        if data is None:
            raise PoolError(f"descriptor {digest[:12]} not found in the DHT")
        spec = PoolSpec.decode(data)
        if spec.digest != digest:
            raise PoolError(f"descriptor {digest[:12]} does not match its digest")
        self._specs[digest] = spec
        if not from_file:
            with contextlib.suppress(OSError):  # a cache: the DHT still has it
                await self._write_file(path, data)
        return spec

    # =========================================================== operations (API)
    async def submit(self, spec: PoolSpec) -> dict[str, object]:
        """Store the spec and hand the pool to its shepherd (which may be us)."""
        from sdmesh.pools.layout import LayoutError, layout

        try:
            layout(await tree_of(spec))
        except LayoutError as error:
            raise PoolError(str(error)) from None
        if self.leaving:
            raise PoolError("this agent is leaving the mesh: submit through another one", 503)
        if not self.has_quorum():
            raise PoolError(
                "this agent sees no majority of the mesh (a partition?): it cannot start "
                "pools until it does",
                503,
            )
        if spec.pool in self.known and self.known[spec.pool].state not in ("terminated", "failed"):
            raise PoolError(f"pool {spec.pool} already exists", 409)
        existing = await self.read_record(spec.pool)
        if existing is not None and existing.state not in ("terminated", "failed"):
            raise PoolError(f"pool {spec.pool} already exists", 409)
        # Above whatever the name's earlier pool reached, so its tombstone (which ends what
        # was ordered up to its generation) does not end this one anywhere.
        earlier = [
            existing.generation if existing is not None else 0,
            self.tombs[spec.pool].generation if spec.pool in self.tombs else 0,
            self.known[spec.pool].generation if spec.pool in self.known else 0,
        ]
        generation = max(earlier) + 1
        await self.store_spec(spec)
        shepherd = self.shepherd_for(spec.pool) or self.name
        self._publish(
            TOPIC_POOL,
            spec.pool,
            {
                "digest": spec.digest,
                "state": "deploying",
                "shepherd": shepherd,
                "generation": generation,
            },
        )
        self.known[spec.pool] = _Known(
            spec.digest, "deploying", shepherd, time.monotonic(), generation
        )
        self.tombs.pop(spec.pool, None)
        if shepherd == self.name:
            await self._shepherd(spec, generation, None)
        else:
            addr = self._address(shepherd)
            reply: object = None
            if addr is not None:
                with contextlib.suppress(StreamError, OSError):
                    reply = await self.client.request(
                        addr,
                        {"rpc": "submit", "spec": spec.encode(), "generation": generation},
                        timeout=RPC_TIMEOUT,
                    )
            if not (isinstance(reply, dict) and reply.get("ok")):
                # Stored and announced: whoever shepherds it next takes it over from the
                # record (e.g. the shepherd was leaving and its successor will).
                log.warning(
                    "pool %s: its shepherd %s did not take it now: %s", spec.pool, shepherd, reply
                )
                with contextlib.suppress(Exception):
                    stored = await self.read_record(spec.pool)
                    if stored is None or stored.generation < generation:
                        await self.write_record(
                            PoolRecord(spec.pool, spec.digest, generation, shepherd)
                        )
        return {"pool": spec.pool, "shepherd": shepherd, "digest": spec.digest}

    def dry_run(self, spec: PoolSpec) -> dict[str, object]:
        from sdmesh.pools.layout import LayoutError, layout
        from sdmesh.pools.placement import place

        try:
            cut = layout(spec_tree(spec))
        except LayoutError as error:
            raise PoolError(str(error)) from None
        plan = place(cut.demands(), self.offers())
        return {
            "pool": spec.pool,
            "shepherd": self.shepherd_for(spec.pool) or self.name,
            "placement": [
                {
                    "path": unit.path,
                    "host": plan.assignments.get(unit.path),
                    "vcpus": unit.demand.vcpus,
                    "memory_mib": unit.demand.memory_mib,
                    "disk_mib": unit.demand.disk_mib,
                }
                for unit in cut.units.values()
            ],
            "unplaced": [{"path": u.path, "reason": u.reason} for u in plan.unplaced],
        }

    def local_status(self, pool: str) -> dict[str, object] | None:
        run = self.shepherding.get(pool) or self._finished_runs.get(pool)
        if run is None:
            return None
        core = run.core
        components = core.components()
        for item in components:
            path = str(item["path"])
            item["domain"] = _domain_name(pool, path, path in core.layout.units)
        return {
            "pool": pool,
            "state": core.state,
            "reason": core.reason,
            "shepherd": self.name,
            "generation": core.generation,
            "components": components,
        }

    async def status(self, pool: str) -> dict[str, object]:
        local = self.local_status(pool)
        if local is not None:
            return local
        shepherd = self.shepherd_for(pool)
        if shepherd and shepherd != self.name:
            addr = self._address(shepherd)
            if addr is not None:
                with contextlib.suppress(StreamError, OSError):
                    reply = await self.client.request(
                        addr, {"rpc": "status", "pool": pool}, timeout=RPC_TIMEOUT
                    )
                    if isinstance(reply, dict) and reply.get("pool") == pool:
                        return reply
        local = self.local_status(pool)  # we may have become its shepherd while we waited
        if local is not None:
            return local
        record = await self.read_record(pool)
        if record is None:
            raise PoolError(f"unknown pool {pool!r}", 404)
        state = "terminated" if pool in self.tombs else record.state
        return {
            "pool": pool,
            "state": state,
            "reason": record.reason,
            "shepherd": record.shepherd,
            "generation": record.generation,
            "components": [
                {"path": unit, "kind": "", "host": host, "state": "unknown", "domain": ""}
                for unit, host in record.placement.items()
            ],
        }

    def pools(self) -> list[dict[str, object]]:
        names = set(self.known) | set(self.shepherding) | set(self.tombs)
        out: list[dict[str, object]] = []
        for pool in sorted(names):
            known = self.known.get(pool)
            run = self.shepherding.get(pool)
            state = run.core.state if run else (known.state if known else "unknown")
            if pool in self.tombs and state not in ("terminated", "failed"):
                state = "terminating"
            out.append(
                {
                    "pool": pool,
                    "state": state,
                    "shepherd": self.shepherd_for(pool) or "",
                }
            )
        return out

    async def terminate(self, pool: str) -> dict[str, object]:
        """Publish the termination record and ask the shepherd; idempotent."""
        record = await self.read_record(pool, newest=True)
        if pool not in self.known and pool not in self.tombs and record is None:
            raise PoolError(f"unknown pool {pool!r}", 404)
        # The tombstone ends what was ordered up to the newest generation known of the pool
        # (a resubmission later starts above it); the shepherd raises it to its own.
        generation = max(
            record.generation if record is not None else 0,
            self.known[pool].generation if pool in self.known else 0,
            self.tombs[pool].generation if pool in self.tombs else 0,
        )
        self._terminate_here(pool, generation)
        shepherd = self.shepherd_for(pool)
        if shepherd and shepherd != self.name:
            addr = self._address(shepherd)
            if addr is not None:
                with contextlib.suppress(StreamError, OSError):
                    await self.client.request(
                        addr,
                        {"rpc": "terminate", "pool": pool, "generation": generation},
                        timeout=RPC_TIMEOUT,
                    )
        return {"pool": pool, "state": "terminating", "shepherd": shepherd or ""}

    def _terminate_here(self, pool: str, generation: int) -> None:
        """Publish (and apply) the pool's tombstone; as its shepherd, over the generation it
        runs at, which a takeover may have raised past what the requester knew."""
        run = self.shepherding.get(pool)
        if run is not None:
            generation = max(generation, run.core.generation)
        old = self.tombs.get(pool)
        if old is None or old.generation < generation:
            self._heard_tomb(pool, generation)  # before our own rumor comes back
            self._publish(TOPIC_TOMB, pool, Tomb(generation, 0.0).encode(self.name))
        tomb = self.tombs.get(pool)
        ignored = tomb is None or tomb.generation < generation  # a rumor looked newer
        if ignored and run is not None and pool in self.shepherding:  # asked: end it
            from sdmesh.pools import shepherd as sc

            self._feed(pool, sc.TerminateRequested("terminated on request"))

    # ======================================================================== RPC
    async def handle_rpc(self, request: dict[str, Any]) -> object:

        kind = request.get("rpc")
        try:
            if kind == "orders":
                orders = [Order.from_wire(o) for o in request.get("orders", [])]
                return {"answers": self.take_orders(orders)}
            if kind == "reports":
                reports = [Report.from_wire(r) for r in request.get("reports", [])]
                # Pools we do not shepherd: the sender tries their shepherd again later.
                return {"ok": True, "unknown": self._deliver_reports(reports)}
            if kind == "inventory":
                pool, host, leaves = request["pool"], request["host"], request["leaves"]
                states = request.get("states") or {}
                if isinstance(leaves, dict):
                    self._handle_inventory(
                        pool,
                        str(host),
                        {str(k): int(v) for k, v in leaves.items()},
                        {str(k): str(v) for k, v in dict(states).items()},
                    )
                return {"ok": True}
            if kind == "submit":
                spec = PoolSpec.decode(request["spec"])
                if self.leaving or not self.has_quorum():
                    why = "leaving the mesh" if self.leaving else "no majority of the mesh"
                    return {"ok": False, "error": f"{self.name}: {why}"}
                self._specs[spec.digest] = spec
                try:
                    await tree_of(spec)  # from another agent: resolved here, off the loop
                    await self.store_spec(spec)
                except PoolError as error:
                    return {"ok": False, "error": str(error)}
                generation = int(request.get("generation", 1))
                self.known[spec.pool] = _Known(
                    spec.digest, "deploying", self.name, time.monotonic(), generation
                )
                tomb = self.tombs.get(spec.pool)
                if tomb is not None and not tomb.covers(generation):
                    del self.tombs[spec.pool]  # a resubmission: the tombstone is the old pool's
                await self._shepherd(spec, generation, None)
                return {"ok": True}
            if kind == "status":
                return self.local_status(str(request.get("pool")))
            if kind == "handover":
                return await self._adopt(request)
            if kind == "terminate":
                pool = str(request.get("pool"))
                known = self.known.get(pool)
                default = known.generation if known is not None else 0
                self._terminate_here(pool, int(request.get("generation", default)))
                return {"ok": True}
        except (RecordFormatError, KeyError, TypeError, ValueError) as error:
            log.warning("malformed %s request: %s", kind, error)
            return {"error": str(error)}
        return {"error": f"unknown request {kind!r}"}

    # ==================================================================== periodic
    async def _periodic_work(self) -> None:
        """Inventory to each pool's shepherd (reconciliation), tombstones, the reaper, the
        pools' rumors again before they expire, and forgetting pools long ended."""
        announced = time.monotonic()
        while True:
            await asyncio.sleep(INVENTORY_PERIOD)
            try:
                await self.send_inventories()
                now = time.monotonic()
                if now - announced >= ANNOUNCE_PERIOD:
                    announced = now
                    self.announce()
                self.prune(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic pool work failed")

    async def send_inventories(self) -> None:
        """Each pool held here, on its own: one pool's failure must not skip the others."""
        now = time.monotonic()
        for pool in self.host.pools_held():
            try:
                await self._inventory_pool(pool, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pool %s: inventory, tombstone or reaper pass failed", pool)

    async def _inventory_pool(self, pool: str, now: float) -> None:
        tomb = self.tombs.get(pool)
        if tomb is not None:
            if now - tomb.since > TOMBSTONE_GRACE:
                self._host_feed(hc.PoolTerminated(pool, tomb.generation))
            return
        known = self.known.get(pool)
        if known is None or known.state in hc.ENDED_STATES:
            # Nobody may shepherd it: what it left here is the reaper's, on the record's word.
            answered, record = await self.lookup_record(pool)
            verdict = self._reaper.judge(
                pool, now, quorate=self.has_quorum(), answered=answered, record=record
            )
            if verdict is not None:
                why = "unknown to the mesh" if record is None else f"{record.state}"
                log.warning("pool %s is %s: removing its leftovers", pool, why)
                self._host_feed(verdict)
                return
            if record is None or record.state in hc.ENDED_STATES:
                return
        else:
            self._reaper.forget(pool)
        leaves, states = self.host.inventory(pool), self.host.states(pool)
        shepherd = self.shepherd_for(pool)
        if shepherd == self.name:
            self._handle_inventory(pool, self.name, leaves, states)
        elif shepherd is not None:
            addr = self._address(shepherd)
            if addr is not None:
                request = {
                    "rpc": "inventory",
                    "pool": pool,
                    "host": self.name,
                    "leaves": leaves,
                    "states": states,
                }
                with contextlib.suppress(StreamError, OSError):
                    await self.client.request(addr, request, timeout=RPC_TIMEOUT)

    def _handle_inventory(
        self, pool: str, host: str, leaves: dict[str, int], states: dict[str, str]
    ) -> None:
        from sdmesh.pools import shepherd as sc

        if pool in self.shepherding:
            self._feed(pool, sc.Inventory(host, leaves, states))

    def announce(self) -> None:
        """Publish the rumor of every live pool shepherded here again: a rumor lives a day,
        and a pool whose rumor expired is neither taken over nor safe from the reaper."""
        for pool, run in list(self.shepherding.items()):
            said = run.core.announcement()
            if said is not None:
                self._publish(
                    TOPIC_POOL,
                    pool,
                    {
                        "digest": run.core.digest,
                        "state": said.state,
                        "shepherd": self.name,
                        "generation": run.core.generation,
                    },
                )

    def prune(self, now: float) -> list[str]:
        """Forget pools that ended more than POOL_RETENTION ago and hold nothing here (their
        tombstone, gossip, status, cached spec and tree, host context): per-pool data must
        not grow with every pool the mesh ever ran. The pools forgotten."""
        held = set(self.host.pools_held())
        ended: list[str] = []
        for pool in set(self.tombs) | set(self.known) | set(self._finished_runs):
            tomb, known = self.tombs.get(pool), self.known.get(pool)
            since = [tomb.since] if tomb is not None else []
            if known is not None and known.state in hc.ENDED_STATES:
                since.append(known.seen)
            if known is not None and tomb is None and known.state not in hc.ENDED_STATES:
                continue  # alive as far as we know
            if not since or now - max(since) < POOL_RETENTION:
                continue
            if pool in held or pool in self.shepherding:
                continue
            ended.append(pool)
        for pool in ended:
            self.tombs.pop(pool, None)
            self.known.pop(pool, None)
            self._finished_runs.pop(pool, None)
            self._digests.pop(pool, None)
            self._takeover_misses.pop(pool, None)
            retry = self._takeover_retry.pop(pool, None)
            if retry is not None:
                retry.cancel()
            self._reaper.forget(pool)
            self.host.forget(pool)
            hosted = self._host_pools.pop(pool, None)
            if hosted is not None:
                self._spawn(hosted.context.close())
        if ended:
            used = {k.digest for k in self.known.values()} | set(self._digests.values())
            used |= {run.core.digest for run in self.shepherding.values()}
            used |= {run.core.digest for run in self._finished_runs.values()}
            used |= {hosted.spec.digest for hosted in self._host_pools.values()}
            for digest in [d for d in self._specs if d not in used]:
                del self._specs[digest]
            for digest in [d for d in _TREES if d not in used]:
                del _TREES[digest]
            log.info("forgot %d pools that ended over a day ago", len(ended))
        return ended

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("pool task failed", exc_info=task.exception())


_TREES: dict[str, Any] = {}


def spec_tree(spec: PoolSpec) -> Any:
    """The resolved tree of a spec (resolved once per digest per process)."""
    tree = _TREES.get(spec.digest)
    if tree is None:
        from sdmesh.language import resolve_text

        resolved = resolve_text(spec.text, f"<pool {spec.pool}>")
        if resolved.digest() != spec.digest:
            raise PoolError(f"pool {spec.pool}: its descriptor resolves differently here")
        tree = _TREES[spec.digest] = resolved.root
    return tree


def remember_tree(spec: PoolSpec, tree: Any) -> None:
    """Cache a tree resolved at submission (``build_spec_and_tree``): the same descriptor,
    so its canonical text need not be resolved again here."""
    _TREES.setdefault(spec.digest, tree)


async def tree_of(spec: PoolSpec) -> Any:
    """``spec_tree`` from a coroutine: a tree not resolved yet is resolved in a worker thread,
    one resolution at a time with the API's (the resolver changes the interpreter's recursion
    limit); PoolError when that takes longer than the API allows a submission."""
    tree = _TREES.get(spec.digest)
    if tree is not None:
        return tree
    try:
        return await off_loop(lambda: spec_tree(spec))
    except TimeoutError:
        raise PoolError(
            f"pool {spec.pool}: resolving its descriptor took too long (the agent is busy)", 503
        ) from None


def _read_file(path: Path) -> bytes | None:
    """The file's bytes; None when it is missing or unreadable."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _domain_name(pool: str, path: str, is_vm: bool) -> str:
    """The libvirt domain of a VM leaf (its name is a function of pool and path)."""
    from sdmesh.hypervisor.spec import domain_name_for

    return domain_name_for(pool, path) if is_vm else ""


def _disk_free_mib(capacity: dict[str, object]) -> int | None:
    """Free disk where a member keeps its volumes; None (no disk check) when it does not say,
    as agents from before disk-aware placement do not."""
    free = capacity.get("disk_free_mib")
    return free if isinstance(free, int) and not isinstance(free, bool) else None


def _free_memory_mib(capacity: dict[str, object]) -> int:
    """Memory a member can still give: what its kernel reports free, or, where that means
    nothing (the test driver), its total less what its VMs hold."""
    free = capacity.get("memory_free_mib")
    if isinstance(free, int):
        return free
    total = capacity.get("memory_mib")
    committed = capacity.get("memory_committed_mib")
    total_mib = total if isinstance(total, int) else 0
    return max(0, total_mib - (committed if isinstance(committed, int) else 0))


class NotStored(Exception):
    """A DHT write that no replica took."""


def _stored(key: str, count: int) -> None:
    if count < 1:
        raise NotStored(f"no replica stored {key} (unreachable, or a newer version is there)")
