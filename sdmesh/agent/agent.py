"""``sdmesh join``: one host's agent. Wires the transport, membership, hypervisor and API.

Lifecycle: bind the gossip port (UDP and TCP on the same number) and join through the seeds
first, saying what we know without the hypervisor (labels, API address, the hypervisor type
its URI names); then open the hypervisor and tell the mesh our capacity (``MetaUpdated``),
start the DHT, serve the control API; then run until asked to leave (``sdmesh leave``, SIGINT
or SIGTERM): hand the pools it shepherds over, announce the leave, let it spread, close.

Why membership first: most of an agent's start-up is importing Python (aiohttp, libvirt,
kademlia), and hosts that boot together start their agents together; joining before those
imports lets the mesh form while they run. They are imported inside ``Agent.run``, each
where it is first needed, in a worker thread (``_import``) so the event loop keeps answering
probes meanwhile: a newcomer that went silent for its imports would be suspected.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sdmesh.agent.config import AgentConfig, host_policy
from sdmesh.agent.events import EventHub, follow_members, follow_pools
from sdmesh.agent.guards import sent_by, signature_guard
from sdmesh.agent.identity import (
    Reloader,
    identity_reload,
    keep_learned_revocations,
    keyring_reload,
    open_identity,
    refuse_loose_key_file,
    reseal_on_renewal,
    summary,
)
from sdmesh.agent.keyring_admin import InstructionError, KeyringAdmin, KeyringInstruction
from sdmesh.agent.leases import start_lease
from sdmesh.agent.mesh import MeshNode
from sdmesh.agent.meta import (
    base_images,
    disk_free_mib,
    member_meta,
    preliminary_meta,
    settled_disk_free,
    witness_meta,
)
from sdmesh.membership import (
    JoinRequested,
    LeaveRequested,
    Member,
    MemberEvent,
    Membership,
    MembershipConfig,
    MetaUpdated,
    Start,
)
from sdmesh.safeio import ensure_private_dir
from sdmesh.transport import (
    PeerBook,
    StreamClient,
    StreamServer,
    TransportSecurity,
    UdpEndpoint,
)
from sdmesh.trust.host import HostTrust

if TYPE_CHECKING:
    from sdmesh.agent.pools import PoolService
    from sdmesh.dht import Dht
    from sdmesh.ha.lease_service import LeaseService
    from sdmesh.hypervisor import HostCapabilities, HypervisorDriver
    from sdmesh.membership.identity import IdentityChecker

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 5.0
#: At most this long handing pools over before the leave is announced (PoolService.leave);
#: with LEAVE_TIMEOUT, well within the systemd unit's TimeoutStopSec (20 s).
HANDOVER_BUDGET = 12.0
#: At most this long, at start-up, to learn which recovered VMs a lease protects before
#: fencing those no lease covered (they may be running elsewhere already).
STARTUP_POLICY_WAIT = 1.0
#: Seconds between two looks at this host's free and committed memory.
CAPACITY_PERIOD = 2.0


class Agent:
    def __init__(self, config: AgentConfig, security: TransportSecurity) -> None:
        self.config = config
        self.security = security
        self.status = "starting"
        self.node: MeshNode | None = None
        self.dht: Dht | None = None
        self.pools: PoolService | None = None
        self.hypervisor: HypervisorDriver | None = None
        self.hypervisor_uri = ""
        self.lease: LeaseService | None = None
        self._inherited_fenceable: frozenset[tuple[str, str]] = frozenset()
        self.events = EventHub()
        """Live member, pool and component events (``GET /v1/events``)."""
        self._server: StreamServer | None = None
        self._leave = asyncio.Event()
        self.reloader = Reloader()
        """What SIGHUP re-reads (sdmesh/agent/identity.py): parts register a reload()."""
        self.identity: IdentityChecker | None = None
        """Host identities (None: no CA configured, every cluster-key holder is trusted)."""
        self.keyring_admin: KeyringAdmin | None = None
        self.trust: HostTrust | None = None
        """Operator keys this host runs descriptors of (sdmesh/trust/host.py)."""

    def reload(self) -> dict[str, list[str]]:
        """SIGHUP: re-read every registered part; a failing part keeps what it had."""
        report = self.reloader.reload()
        trusted = ""
        if self.trust is not None:
            trusted = f"; {len(self.trust.store.operators)} operator key(s) trusted"
        log.info("reloaded %s%s", summary(report), trusted)
        return report

    def request_leave(self) -> None:
        self._leave.set()

    def drops(self) -> dict[str, int]:
        """Datagrams and stream frames refused, by reason (forged, replayed, malformed...)."""
        if self.node is None:
            return {}
        totals: dict[str, int] = {}
        sources = [self.node.udp.counters, self.node.client.counters]
        if self._server is not None:
            sources.append(self._server.counters)
        for counters in sources:
            for reason, count in counters.as_dict().items():
                totals[reason] = totals.get(reason, 0) + count
        if self.identity is not None:
            totals.update(self.identity.refusals.as_dict())
        if self.keyring_admin is not None:
            totals["keyring_refused"] = self.keyring_admin.refused
        totals["rumor_clock"] = self.node.core.stats.rumors_refused  # forged Lamport times
        return totals

    def dht_drops(self) -> dict[str, int]:
        """DHT datagrams refused, by reason (``misdirected``: gossip sent to the DHT port, or a
        frame for another node)."""
        return self.dht.counters.drops.as_dict() if self.dht is not None else {}

    def peers(self) -> list[dict[str, object]]:
        assert self.node is not None
        return [
            {
                "name": member.name,
                "address": f"{member.addr[0]}:{member.addr[1]}",
                "state": member.state.value,
                "incarnation": member.incarnation,
                "meta": member.meta,
            }
            for member in sorted(self.node.core.members(), key=lambda m: m.name)
        ]

    async def run(self) -> None:
        config = self.config
        # Ours and writable by us alone, or refused before anything is created (issue 11).
        ensure_private_dir(config.state_dir, 0o711, what="state directory")
        scheme = "https" if config.tls_cert else "http"  # TLS: tls-cert/tls-key (api_auth.py)
        api = f"{scheme}://{config.api[0]}:{config.api[1]}"
        images = base_images(config.images_dir)
        loop = asyncio.get_running_loop()
        # SIGHUP reloads (never the default, which kills without a leave); a loose key file
        # or an unusable host identity stops the start here.
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        refuse_loose_key_file(self.security.key_file)
        identity = self.identity = open_identity(config)
        self.reloader.register("cluster-key", keyring_reload(self.security))
        self.trust = HostTrust.open(config.operators_dir, config.api_signing_key)
        self.reloader.register("operators", self.trust.reload)
        # Everything opened is closed in reverse order, however far start-up got.
        async with contextlib.AsyncExitStack() as stack:
            # Membership first, with what we know without the hypervisor (see the docstring).
            # Frames name their recipient: who listens where comes from membership (mesh.py).
            peers = PeerBook()
            udp = await UdpEndpoint.bind(
                config.bind, self.security, identity=config.name, peers=peers
            )
            stack.push_async_callback(_close_udp, udp)
            bound = udp.local_address
            advertised = config.advertised()
            if config.bind[1] == 0:
                advertised = (advertised[0], bound[1])
            client = StreamClient(self.security, identity=config.name, peers=peers)
            core = Membership(
                MembershipConfig(max_datagram_bytes=udp.max_payload),
                Member(
                    config.name,
                    advertised,
                    # With identities, a restart's claims must beat its older signed ones
                    # (a replayed old alive is refused below the highest incarnation seen).
                    incarnation=int(time.time()) if identity is not None else 0,
                    meta=witness_meta(config.labels, api)
                    if config.witness
                    else preliminary_meta(
                        config.hypervisor, config.labels, images, api, config.allow_shell
                    ),
                ),
                random.Random(),
                identity,
            )
            node = self.node = MeshNode(core, udp, client)
            self.keyring_admin = KeyringAdmin(config.name, self.security, identity)
            if identity is not None:
                self.reloader.register(
                    "identity", identity_reload(config, identity, node.feed, self._own_meta)
                )
                node.rumor_listeners.append(keep_learned_revocations(config))
            stack.push_async_callback(node.close)
            node.listeners.append(_log_member_event)
            follow_members(self.events, node)
            server = self._server = await StreamServer.start(
                (config.bind[0], bound[1]),
                self.security,
                self._handle_stream,
                identity=config.name,
                accepts_unaddressed=_is_membership_request,
            )
            stack.push_async_callback(_close_server, server)
            node.feed(Start())
            if config.peers:
                node.feed(JoinRequested(tuple(config.peers)))
            # The mesh knows us from here on: if the rest of start-up fails (or is interrupted),
            # leave gracefully rather than let the others find us dead.
            stack.push_async_exit(_leave_on_error(node))

            # Leases (docs/ha.md): every member votes, a witness too; hosts hold them.
            if config.leases:
                self.lease = await start_lease(
                    stack, node, config, self._fenceable, self._lease_lost, self._inherit
                )
            # A witness only votes (docs/ha.md): no hypervisor, no DHT, no pools.
            pools = None if config.witness else await self._start_host(stack, node, api, images)

            # The control API (aiohttp) last: once it answers, the agent is fully up.
            await _import("sdmesh.agent.api")
            from aiohttp import web

            from sdmesh.agent import api_limits
            from sdmesh.agent.api import build_app
            from sdmesh.agent.api_auth import server_ssl_context, socket_path
            from sdmesh.agent.api_socket import bind_control_socket, remove_socket

            limits = api_limits.ApiLimits()  # connection caps, header timeout (api_limits.py)
            runner = web.AppRunner(
                build_app(self), access_log=None, keepalive_timeout=limits.header_timeout
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            # Local control: the Unix socket (api_socket.py), then tokens over TCP.
            control = bind_control_socket(socket_path(config), config.api_socket_group or None)
            stack.callback(remove_socket, control)
            await web.SockSite(runner, control.sock).start()
            _log_socket(control.path, control.group, config.api_socket_group)
            tls = server_ssl_context(config)
            listener, _ = await api_limits.serve(
                runner, config.api[0], config.api[1], ssl_context=tls, limits=limits
            )
            stack.callback(listener.close)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.request_leave)
                stack.callback(loop.remove_signal_handler, signum)

            self.status = "running"
            log.info(
                "agent %s on %s:%d (api %s:%d, hypervisor %s)",
                config.name,
                advertised[0],
                advertised[1],
                config.api[0],
                config.api[1],
                "none (witness)" if pools is None else self.hypervisor_uri,
            )
            _notify_systemd("READY=1")
            await self._leave.wait()
            self.status = "leaving"
            _notify_systemd("STOPPING=1")
            if self.lease is not None:  # before the hand-over: the guard keeps the VMs
                await self.lease.leave()
            if pools is not None:  # a witness shepherds nothing: no hand-over
                await _hand_over(pools)
            node.feed(LeaveRequested())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.left.wait(), LEAVE_TIMEOUT)
        self.status = "stopped"

    def _fenceable(self) -> frozenset[tuple[str, str]]:
        """This host's fenceable (pool, component) pairs, for the fence guard: until the pool
        service has recovered this host's VMs, what the previous agent had armed (a restart
        that re-armed the guard with nothing would leave its VMs unfenced)."""
        if self.pools is None:
            return self._inherited_fenceable
        return self.pools.fenceable()

    def _inherit(self, pairs: frozenset[tuple[str, str]]) -> None:
        self._inherited_fenceable = pairs

    def _lease_lost(self, reason: str) -> None:
        """The isolation response: the pool service stops this host's fenceable VMs."""
        if self.pools is not None:
            self.pools.fence(reason)

    async def _start_host(
        self, stack: contextlib.AsyncExitStack, node: MeshNode, api: str, images: list[str]
    ) -> PoolService:
        """A hypervisor host's parts: libvirt, the DHT and the pool service."""
        config = self.config
        loop = asyncio.get_running_loop()
        bound = node.udp.local_address
        # Then the hypervisor (libvirt); the mesh learns our capacity as soon as we do.
        await _import("sdmesh.hypervisor")
        from sdmesh.hypervisor import LibvirtDriver
        from sdmesh.hypervisor.simulated_host import hypervisor_uri

        uri = self.hypervisor_uri = hypervisor_uri(config.hypervisor, config.state_dir)
        hypervisor = await stack.enter_async_context(LibvirtDriver(uri, owner=config.name))
        self.hypervisor = hypervisor
        caps = await hypervisor.capabilities()
        capacity = await hypervisor.capacity()
        disk = disk_free_mib(config.state_dir / "volumes")
        meta = member_meta(
            caps, capacity, config.labels, images, api, disk, shell=config.allow_shell
        )
        node.feed(MetaUpdated(meta))
        refresh = loop.create_task(self._refresh_capacity(meta, caps, images, api, disk))
        stack.callback(refresh.cancel)

        # The DHT (kademlia) listens on the gossip port + 1 of every member.
        await _import("sdmesh.dht")
        from sdmesh.dht import Dht
        from sdmesh.dht.ids import node_id_for

        dht = self.dht = Dht(node_id=node_id_for(config.name))
        await dht.start((config.bind[0], bound[1] + 1), self.security)
        stack.callback(dht.stop)
        # Replicas keep, and lookups read, only descriptors under their own digest and
        # well-formed pool records: a forgery at a higher version must not replace them.
        from sdmesh.pools.record_admission import pool_admission

        dht.set_admission(pool_admission(None))

        # Descriptors are resolved in a worker process (issue 11.5), started now so the
        # first submission does not pay its cold start.
        from sdmesh.pools.resolve_worker import default_worker, stop_resolver

        await default_worker().start()
        stack.push_async_callback(stop_resolver)

        # Pools: this host's share (rebuilt from libvirt) and the pools it shepherds.
        from sdmesh.agent.pools import PoolService
        from sdmesh.trust.termination import termination_check

        lease = self.lease
        # What a previous agent left running is covered only by its guard's deadline (the
        # lease core starts from it): without one, or if the lease lapses meanwhile, the
        # recovered restartable VMs may have been rebuilt elsewhere already.
        covered = lease is not None and lease.covered_at_start()
        lapses = lease.lapses if lease is not None else 0
        pools = PoolService(
            config.name, node, dht, node.client, hypervisor, caps, config.state_dir, lease
        )
        # What descriptors may make this host do (allow-lists, shell), and who may order it:
        # every deploy and start needs an envelope from a trusted operator (docs/security.md).
        pools.policy = host_policy(config)
        if self.trust is not None:
            pools.leaf_guards.append(signature_guard(self.trust, pools, self.events.publish))
            # Terminations from the mesh: an operator's signature, always (the API signs for
            # the callers it authorized: api.py authorize_termination).
            pools.termination_check = termination_check(self.trust)
        if self.identity is not None:
            # Host identities: records and pool rumors carry their writer's proof, and are
            # read only from a writer entitled to write them (sdmesh/pools/record_seal.py).
            from sdmesh.agent.pools.common import TOPIC_POOL, TOPIC_TOMB
            from sdmesh.pools.record_seal import envelope_checker

            pools.prove = self.identity.prove
            pools.check_signed = self.identity.check_signed
            for topic in (TOPIC_POOL, TOPIC_TOMB):  # forged ones: neither stored nor forwarded
                self.identity.rumor_checks[topic] = pools.admit_rumor
            if self.trust is not None:
                pools.envelope_check = envelope_checker(self.trust, time.time)
            # DHT replicas and lookups keep only records the pool service would take.
            dht.set_admission(pool_admission(pools.record_kept))
            # A certificate renewed by a reload: the records shepherded here sealed again.
            self.reloader.register(
                "records", reseal_on_renewal(self.identity, pools.certificate_renewed)
            )
        await pools.start()
        stack.push_async_callback(pools.close)
        self.pools = pools
        if lease is not None and (not covered or lease.lapses != lapses or not lease.may_run()):
            await pools.policies_known(STARTUP_POLICY_WAIT)
            pools.fence("no lease covered this host's VMs while no agent ran")
        follow_pools(self.events, pools)
        if config.peers:
            seeds = [(host, port + 1) for host, port in config.peers]
            bootstrap = loop.create_task(self._bootstrap_dht(dht, seeds))
            stack.callback(bootstrap.cancel)
        return pools

    async def _handle_stream(self, request: object, peer: tuple[str, int]) -> object:
        """Requests on the gossip port's stream: pool RPCs, else membership's push-pull."""
        if self._from_revoked(peer[0]):
            return None  # a quiet refusal (counted): the peer's request times out
        if isinstance(request, dict) and request.get("rpc") == "keyring":
            return self._keyring_rpc(request)
        if isinstance(request, dict) and request.get("rpc") == "lease" and self.lease is not None:
            assert self.node is not None
            return await self.lease.handle_rpc(request, sent_by(self.node, peer))
        if isinstance(request, dict) and "rpc" in request:
            if self.pools is None:
                return {"error": "a witness runs no pools" if self.config.witness else "starting"}
            assert self.node is not None
            return await self.pools.handle_rpc(request, sent_by(self.node, peer))
        assert self.node is not None
        return await self.node.handle_stream(request, peer)

    def _from_revoked(self, host: str) -> bool:
        """Whether a stream comes from a revoked member's IP address, shared by no live
        member (streams come from ephemeral ports, so only the address can tell)."""
        identity, node = self.identity, self.node
        if identity is None or node is None or not identity.blocked_host(host):
            return False
        if any(m.addr[0] == host for m in node.core.live_members()):
            return False
        identity.refusals.blocked += 1
        return True

    def _own_meta(self) -> dict[str, object]:
        """The metadata we gossip now (re-signed when our certificate is renewed)."""
        assert self.node is not None
        me = self.node.core.member(self.config.name)
        return dict(me.meta) if me is not None else {}

    def _keyring_rpc(self, request: dict[str, object]) -> dict[str, str]:
        """A rotation step another member sends (sdmesh/agent/keyring_admin.py)."""
        if self.keyring_admin is None:
            return {"error": "starting"}
        try:
            instruction = KeyringInstruction.from_wire(request)
            return {"result": self.keyring_admin.accept(instruction)}
        except InstructionError as error:
            log.warning("keyring instruction refused: %s", error)
            return {"error": str(error)}

    async def _refresh_capacity(
        self,
        meta: dict[str, object],
        caps: HostCapabilities,
        images: list[str],
        api: str,
        disk: int | None,
    ) -> None:
        """Tell the mesh when our committed or free memory, or free disk where the volumes
        live, changes: placement reads them from our metadata. Polled (one cheap libvirt call,
        one statvfs) rather than hooked to each operation, so VMs started or stopped outside
        sdmesh count too, and a burst of deploys costs one update per period, not one per VM.
        Free disk only moves in coarse steps (``settled_disk_free``): guests write all the
        time."""
        assert self.node is not None and self.hypervisor is not None
        while True:
            await asyncio.sleep(CAPACITY_PERIOD)
            try:
                capacity = await self.hypervisor.capacity()
            except Exception as error:  # libvirt restarting: keep the last figures
                log.debug("capacity refresh failed: %s", error)
                continue
            disk = settled_disk_free(disk, disk_free_mib(self.config.state_dir / "volumes"))
            fresh = member_meta(
                caps, capacity, self.config.labels, images, api, disk, shell=self.config.allow_shell
            )
            if fresh != meta:
                meta = fresh
                self.node.feed(MetaUpdated(meta))

    async def _bootstrap_dht(self, dht: Dht, seeds: list[tuple[str, int]]) -> None:
        """Retry until some seed answers: the seed may start after us."""
        delay = 0.5
        while True:
            with contextlib.suppress(Exception):
                if await dht.bootstrap(seeds):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _is_membership_request(request: object) -> bool:
    """Unaddressed stream requests served: membership's push-pull (a join through a seed
    whose name we do not know yet; its content is gossip every member gets anyway), never a
    pool RPC, whose replay to another member would act twice."""
    return not (isinstance(request, dict) and "rpc" in request)


async def _hand_over(pools: PoolService) -> None:
    """Pools first (cli.md): this agent's pools go to their successors while it is still a
    member; its host's VMs stay. Bounded, so SIGTERM always ends."""
    try:
        handed = await asyncio.wait_for(pools.leave(), HANDOVER_BUDGET)
        for pool, successor in sorted(handed.items()):
            log.info("pool %s: handed over to %s", pool, successor or "nobody yet")
    except TimeoutError:
        log.warning(
            "handing pools over took more than %.0f s: leaving anyway; their "
            "successors take them over from the saved records",
            HANDOVER_BUDGET,
        )
    except Exception:
        log.exception("handing pools over failed: leaving anyway")


def _leave_on_error(node: MeshNode) -> Callable[..., Awaitable[None]]:
    """An exit callback for the start-up stack: announce our leave if start-up failed."""

    async def leave(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None and not node.left.is_set():
            node.feed(LeaveRequested())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.left.wait(), LEAVE_TIMEOUT)

    return leave


async def _import(module: str) -> None:
    """Import ``module`` (and what it imports) in a worker thread: the event loop keeps
    running meanwhile, so membership answers probes while the agent loads its heavy parts."""
    await asyncio.to_thread(importlib.import_module, module)


async def _close_udp(udp: UdpEndpoint) -> None:
    udp.close()
    await udp.wait_closed()


async def _close_server(server: StreamServer) -> None:
    server.close()
    await server.wait_closed()


def _log_socket(path: object, group: str | None, wanted: str) -> None:
    if group is not None:
        log.info("control socket %s (root and group %s, mode 0660)", path, group)
    elif wanted:
        log.warning(
            "control socket %s is for the agent's user only (mode 0600): the group %s does not "
            "exist (groupadd --system %s, then restart, lets its members in)",
            path,
            wanted,
            wanted,
        )
    else:
        log.info("control socket %s (the agent's user only, mode 0600)", path)


def _log_member_event(event: MemberEvent) -> None:
    member = event.member
    log.log(
        # Metadata-only updates (capacity moving as VMs come and go) are routine.
        logging.INFO if event.old_state is not event.new_state else logging.DEBUG,
        "member %s (%s:%d) %s -> %s",
        member.name,
        member.addr[0],
        member.addr[1],
        event.old_state.value if event.old_state else "unknown",
        event.new_state.value,
    )


def _notify_systemd(message: str) -> None:
    """sd_notify without a dependency: a datagram to $NOTIFY_SOCKET (Type=notify units)."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(target)
        sock.send(message.encode())


__all__ = ["Agent"]
