"""How the agent runs its lease service (sdmesh.ha, docs/ha.md): over stream RPCs to each
member's gossip port, with the fence guard armed where guests outlive the agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sdmesh.agent.config import AgentConfig
from sdmesh.agent.mesh import MeshNode
from sdmesh.finite import finite_number

if TYPE_CHECKING:
    from sdmesh.ha.lease_service import LeaseService

log = logging.getLogger("sdmesh.agent.agent")


async def start_lease(
    stack: contextlib.AsyncExitStack,
    node: MeshNode,
    config: AgentConfig,
    fenceable: Callable[[], frozenset[tuple[str, str]]],
    on_isolated: Callable[[str], None],
    inherit: Callable[[frozenset[tuple[str, str]]], None] = lambda pairs: None,
) -> LeaseService:
    """The lease service (sdmesh.ha): renews over stream RPCs to each member's gossip port,
    follows the membership view for its voters, keeps the fence guard armed. A previous
    agent's guard deadline bounds how long leftovers are kept before the first renewal."""
    from sdmesh.ha.guard_client import GuardClient
    from sdmesh.ha.lease_service import LeaseService
    from sdmesh.ha.timing import LeaseTiming

    timing = LeaseTiming(isolation_timeout=config.isolation_timeout)
    guard_socket = config.fence_guard_socket
    if simulated(config.hypervisor):
        guard_socket = None  # the test driver's guests live and die inside the agent process
    guard = GuardClient(guard_socket) if guard_socket else None
    inherited = None
    if guard is not None:
        status = await asyncio.to_thread(guard.status, 1.0)
        if status is None:
            log.warning(
                "fence guard at %s does not answer: no restartable VM starts on this host "
                'until it does (start sdmesh-fence-guard, or set fence-guard-socket = "" '
                "to run without one)",
                guard_socket,
            )
        if status is not None and status.get("mode") == "armed":
            fence_at = finite_number(status.get("fence_at"))  # NaN would never fence
            inherited = None if fence_at is None else float(fence_at)
            # What the previous agent had armed stays armed until this one has recovered its
            # own VMs: a first renewal must not re-arm the guard with an empty list.
            pairs = status.get("fenceable")
            if isinstance(pairs, list):
                inherit(
                    frozenset(
                        (str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2
                    )
                )

    async def rpc(member: str, payload: dict[str, object]) -> object:
        found = node.core.member(member)
        if found is None:
            raise LookupError(f"{member} is not a member")
        return await node.client.request(found.addr, payload, timeout=timing.renew_interval)

    def lost(reason: str) -> None:
        # The lease service warns when a held lease is lost, and the pools when they stop
        # VMs: at start-up (no lease yet, nothing running) this is no news.
        log.debug("isolation response due (%s): pools stop their restartable VMs", reason)
        on_isolated(reason)

    from sdmesh.agent.pools.common import RPC_TIMEOUT

    # Orders travel at most RPC_TIMEOUT: the shepherd then aborts the connection, dropping
    # what its kernel had not delivered (sdmesh.transport.stream).
    lease = LeaseService(
        config.name, rpc, config.state_dir, timing=timing, guard=guard,
        fenceable=fenceable, on_isolated=lost, order_flight=RPC_TIMEOUT,
    )  # fmt: skip
    # Voters: the saved set plus the view (a restart is no mesh of one), shrunk only by leaves.
    lease.start(node.core.members(), inherited, peers_configured=bool(config.peers))
    node.listeners.append(lambda _event: lease.members_changed(node.core.members()))
    stack.push_async_callback(lease.close)
    if guard is not None:
        stack.callback(guard.close)
    return lease


def simulated(hypervisor: str) -> bool:
    """libvirt's test driver (the embedded default, or a ``test://`` URI): its domains are
    the agent process's own, so nothing outlives the agent for a fence guard to destroy."""
    return hypervisor in ("", "test") or hypervisor.startswith("test:")
