"""Host side: this host's leaf operations. Orders go through the host core
(sdmesh.pools.host), which decides; this module runs what it decides on libvirt through the
single-host components, and rebuilds the host's share from libvirt after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sdmesh.agent.pools.common import LeafOp, PoolError, domain_name
from sdmesh.agent.pools.fencing import fenceable_units
from sdmesh.agent.pools.state import HostedPool, PoolState
from sdmesh.agent.pools.trees import tree_of
from sdmesh.pools import host as hc
from sdmesh.pools.records import Order, retry_delay

log = logging.getLogger(__name__)

#: A host tries this many times to get a pool's descriptor (DHT, then the shepherd),
#: backing off from DESCRIPTOR_RETRY_FIRST to DESCRIPTOR_RETRY_MOST seconds, before the
#: leaves waiting for it fail (about 20 s in all).
DESCRIPTOR_ATTEMPTS = 7
DESCRIPTOR_RETRY_FIRST = 0.25
DESCRIPTOR_RETRY_MOST = 4.0


class HostSide(PoolState):
    """Runs this host's share of each pool."""

    def _host_feed(self, event: hc.Event) -> list[hc.Answer]:
        answers = []
        if isinstance(event, hc.PoolTerminated):
            # What the core does not hold (a seed or disk whose VM died with an earlier
            # process of this agent) is swept by its tags: terminate leaves nothing.
            self._spawn(self._sweep_leftovers(event.pool, event.generation))
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
            if order.op != "terminate" and tomb is not None and not tomb.covers(order.generation):
                refused = self.resurrection_refusal(order.pool, order.generation, order.signature)
                if refused is not None:
                    out.append(["refused", refused, 0])
                    continue
            if self.host.resubmitted(order):
                self._forget_descriptor(order.pool)  # the name's earlier pool had another
            self._digests.setdefault(order.pool, order.digest)
            if order.op != "terminate" and order.signature:
                self._signatures[order.pool] = order.signature
            veto = self._admission_veto(order) if order.op == "deploy" else None
            held = self._holds(order.pool, order.path)
            answers = self._host_feed(hc.OrderReceived(order, veto))
            answer = answers[0] if answers else None
            released = answer is not None and answer.outcome == "accepted"
            if order.op == "terminate" and not held and released:
                # Nothing of it here as far as the core knows: whatever an earlier process
                # left of it (its seed, its disk) goes by its tags.
                self._spawn(self._remove_by_tags(order.pool, order.path, order.generation))
            if answer is None:
                out.append(["accepted", "", 0])
            else:
                out.append([answer.outcome, answer.reason, answer.seen])
        return out

    def _admission_veto(self, order: Order) -> str | None:
        """The first ``admission_guards`` refusal of a new unit (the host core applies it
        only when the order would admit one): the shepherd places the unit elsewhere."""
        for guard in self.admission_guards:
            refusal = guard(order)
            if refusal is not None:
                return refusal
        return None

    def _leaf_veto(self, hosted: HostedPool, action: hc.RunLeaf) -> str | None:
        """The first ``leaf_guards`` refusal to deploy or start this leaf here."""
        node = hosted.nodes.get(action.path)
        if node is None:
            return None  # _deploy says so
        for guard in self.leaf_guards:
            refusal = guard(hosted.spec, node, action.op)
            if refusal is not None:
                return refusal
        return None

    def _forget_descriptor(self, pool: str) -> None:
        """A resubmission under the name of an ended pool: its spec and tree are the new
        descriptor's (leftovers of the old one are removed by their libvirt tags)."""
        self._digests.pop(pool, None)
        self._signatures.pop(pool, None)
        self._hosting.pop(pool, None)  # a load under way is the earlier pool's
        hosted = self._host_pools.pop(pool, None)
        if hosted is not None:
            self._spawn(hosted.context.close())

    async def _run_leaf(self, action: hc.RunLeaf) -> None:
        from sdmesh.lifecycle.model import TerminationRecord
        from sdmesh.runner.app import ComponentError

        error: str | None = None
        began = time.monotonic()
        # A start that began before a lease lapse must not leave its VM running (docs/ha.md).
        lapses = self.lease.lapses if self.lease is not None else 0
        guarded = False
        vm_start = False  # a VM's start was attempted: a failure may leave it running
        try:
            hosted = await self._hosted(action.pool)
            hosted.context.generation = action.generation
            began = time.monotonic()  # the leaf's own work: not the spec's first DHT read
            self._leaf_op(action, None, None)
            refusal = self._leaf_veto(hosted, action) if action.op != "terminate" else None
            if refusal is not None:
                error = refusal
            elif action.op == "deploy":
                error = await self._deploy(hosted, action)
            elif action.op == "start":
                component = hosted.components.get(action.path)
                unit = self.host.pools[action.pool].leaves.get(action.path)
                unit_path = unit.unit if unit is not None else action.path
                if component is None:
                    error = f"{action.path} was not deployed on {self.name}"
                elif (refused := self.start_refusal(action.pool, unit_path)) is not None:
                    error = refused
                else:
                    guarded = self.unit_fenceable(action.pool, unit_path) is not False
                    vm_start = unit_path == action.path
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
        if (
            guarded
            and error is None
            and self.lease is not None
            and (self.lease.lapses != lapses or not self.lease.may_run())
        ):
            error = await self.undo_start(action.pool, action.path)
        if vm_start and error is not None and not error.startswith("fenced"):
            await self._destroy_failed_start(action.pool, action.path)
        if action.op == "terminate":
            if error is not None:
                log.warning(
                    "pool %s: terminating %s left something: %s", action.pool, action.path, error
                )
            error = None  # whatever is left is the reaper's; the leaf is gone for the pool
        elif error is not None:
            log.warning("pool %s: %s of %s failed: %s", action.pool, action.op, action.path, error)
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
            domain_name(action.pool, action.path, sf_class == VIRTUAL_MACHINE),
            seconds,
            error,
        )
        for listener in self.leaf_listeners:
            try:
                listener(op)
            except Exception:  # an observer's bug must not fail the leaf
                log.exception("leaf listener failed")

    async def _deploy(self, hosted: HostedPool, action: hc.RunLeaf) -> str | None:
        from sdmesh.components.registry import component_factory

        node = hosted.nodes.get(action.path)
        if node is None:
            return f"{action.path} is not a component of pool {action.pool}"
        pool, path = action.pool, action.path

        def ended(record: Any) -> None:
            log.warning("pool %s: %s ended by itself: %s", pool, path, record.description)
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

    async def _hosted(self, pool: str) -> HostedPool:
        """The pool's share here, its descriptor fetched and resolved once (however many of
        its leaves ask at once)."""
        hosted = self._host_pools.get(pool)
        if hosted is not None:
            return hosted
        loading = self._hosting.get(pool)
        if loading is None:
            loading = self._hosting[pool] = self._loop.create_task(self._load_hosted(pool))
            self._tasks.add(loading)
            loading.add_done_callback(self._tasks.discard)
            loading.add_done_callback(lambda done: self._loaded(pool, done))
        return await asyncio.shield(loading)

    def _loaded(self, pool: str, task: asyncio.Task[HostedPool]) -> None:
        if self._hosting.get(pool) is task:
            del self._hosting[pool]
        if not task.cancelled():
            task.exception()  # retrieved: every leaf waiting for it got it already

    async def _load_hosted(self, pool: str) -> HostedPool:
        """Fetch and resolve the pool's descriptor. A miss (the DHT did not have it, the
        shepherd did not answer, the agent was too busy to resolve it) is tried again with
        backoff before the leaf fails: a hiccup must not fail a pool."""
        from sdmesh.components.context import HostContext
        from sdmesh.pools.layout import skeleton, walk

        digest = self._digests.get(pool)
        if digest is None:
            raise PoolError(f"no descriptor known for pool {pool}")
        attempt = 0
        while True:
            try:
                spec = await self.spec(digest, pool, ask=self.host.shepherd_of(pool))
                tree = await tree_of(spec)
                root = skeleton(tree)
                break
            except PoolError as error:
                if error.status != 503 or attempt + 1 >= DESCRIPTOR_ATTEMPTS:
                    raise
                delay = retry_delay(attempt, DESCRIPTOR_RETRY_FIRST, DESCRIPTOR_RETRY_MOST)
                log.info("pool %s: %s; trying again in %.1f s", pool, error, delay)
                await asyncio.sleep(delay)
                attempt += 1
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
                policy=self.policy,
            )
            nodes = {node.path: node for node in walk(root)}
            hosted = self._host_pools[pool] = HostedPool(
                spec, root, nodes, context, fenceable=fenceable_units(tree)
            )
        return hosted

    def _holds(self, pool: str, path: str) -> bool:
        state = self.host.pools.get(pool)
        return state is not None and path in state.leaves

    def _ours(self, node: str | None) -> bool:
        """Whether a domain or volume tagged ``node`` is this agent's to remove: another
        agent's on a shared libvirtd or volume group never is (untagged ones from before
        tags named their agent are)."""
        return node is None or node == self.name

    async def _sweep_leftovers(self, pool: str, generation: int | None) -> None:
        """Volumes (seeds included) of a terminated pool, up to ``generation`` (every one
        when None), that no leaf the core holds owns: a held leaf's own terminate removes
        its volumes, and a resubmission's newer ones are not the ended pool's."""
        from sdmesh.components.context import HostContext

        context = HostContext(
            self.driver, self.caps, self.state_dir / "volumes", pool, 0, "", policy=self.policy
        )
        for keeper in context.keepers():
            for volume in await keeper.list_owned(pool):
                owner = volume.owner
                if generation is not None and owner.generation > generation:
                    continue
                if self._holds(pool, owner.path) or not self._ours(owner.node):
                    continue
                try:
                    await keeper.release(volume)
                except Exception as error:  # the reaper tries again; nothing else to undo
                    log.warning("pool %s: could not remove %s: %s", pool, volume.path, error)

    async def _remove_by_tags(self, pool: str, path: str, through: int | None = None) -> None:
        """Tear down a leaf whose component is not in memory (recovered after a restart, or
        left by an earlier process); with ``through``, only what generations up to it made."""
        from sdmesh.components.context import HostContext

        for domain in await self.driver.list_managed(pool):
            meta = domain.metadata
            newer = through is not None and meta.generation > through
            if meta.path == path and not newer and self._ours(meta.node):
                with contextlib.suppress(Exception):
                    await self.driver.destroy(domain.name)
        context = HostContext(
            self.driver, self.caps, self.state_dir / "volumes", pool, 0, "", policy=self.policy
        )
        for keeper in context.keepers():
            for volume in await keeper.list_owned(pool):
                newer = through is not None and volume.owner.generation > through
                if volume.owner.path == path and not newer and self._ours(volume.owner.node):
                    with contextlib.suppress(Exception):
                        await keeper.release(volume)

    async def _recover(self) -> None:
        """Leaves this host holds, from the hypervisor: a VM exists only if libvirt lists
        its domain (running, or defined and stopped), never because files it left (a
        cloud-init seed) are still there; disks from their volumes' tags."""
        from sdmesh.components.context import HostContext

        found = 0
        domains: set[tuple[str, str]] = set()
        digests: dict[str, str] = {}
        for domain in await self.driver.list_managed():
            meta = domain.metadata
            if not meta.pool:
                continue
            domains.add((meta.pool, meta.path))
            algorithm, _, digest = meta.descriptor_hash.partition(":")
            if algorithm == "sha256" and digest:
                digests.setdefault(meta.pool, digest)
            self.host.handle(
                hc.Recovered(
                    meta.pool,
                    meta.path,
                    meta.path,
                    meta.generation,
                    "",
                    domain.vcpus,
                    domain.memory_mib,
                    "running" if domain.state.active else "deployed",
                )
            )
            found += 1
        context = HostContext(
            self.driver, self.caps, self.state_dir / "volumes", "", 0, "", policy=self.policy
        )
        seeds = context.seeds()
        for seed in await seeds.list_owned():
            if (seed.owner.pool, seed.owner.path) not in domains:
                # A VM's seed says nothing of the VM (libvirt answered for it above): one
                # without its domain is left over from a VM that died with an earlier
                # process; a rebuild makes its own.
                with contextlib.suppress(Exception):
                    await seeds.release(seed)
        for keeper in context.keepers():
            if keeper is seeds:
                continue
            for volume in await keeper.list_owned():
                owner = volume.owner
                if (owner.pool, owner.path) in domains:
                    continue  # a VM's own volume: the domain's state stands
                self.host.handle(
                    hc.Recovered(
                        owner.pool, owner.path, owner.path, owner.generation, "", adopt=True
                    )
                )
                found += 1
        if found:
            log.info(
                "recovered %d leaves of %d pools from libvirt", found, len(self.host.pools_held())
            )
        self.load_policies(digests)  # which recovered VMs the lease protects
