"""``sdmesh join``: one host's agent. Wires the transport, membership, hypervisor and API.

Lifecycle: open the hypervisor (for capacity and, later, pools), bind the gossip port (UDP
and TCP on the same number), join through the seeds, serve the control API, then run until
asked to leave (``sdmesh leave``, SIGINT or SIGTERM): announce the leave, let it spread, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket

from aiohttp import web

from sdmesh.agent.api import build_app
from sdmesh.agent.config import AgentConfig
from sdmesh.agent.mesh import MeshNode
from sdmesh.agent.meta import base_images, member_meta
from sdmesh.dht import Dht
from sdmesh.dht.ids import node_id_for
from sdmesh.hypervisor import LibvirtDriver
from sdmesh.membership import (
    JoinRequested,
    LeaveRequested,
    Member,
    MemberEvent,
    Membership,
    MembershipConfig,
    Start,
)
from sdmesh.runner.local import hypervisor_uri
from sdmesh.transport import StreamClient, StreamServer, TransportSecurity, UdpEndpoint

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 5.0


class Agent:
    def __init__(self, config: AgentConfig, security: TransportSecurity) -> None:
        self.config = config
        self.security = security
        self.status = "starting"
        self.node: MeshNode | None = None
        self.dht: Dht | None = None
        self._server: StreamServer | None = None
        self._leave = asyncio.Event()

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
        return totals

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
        config.state_dir.mkdir(parents=True, exist_ok=True)
        uri = hypervisor_uri(config.hypervisor, config.state_dir)
        loop = asyncio.get_running_loop()
        # Everything opened is closed in reverse order, however far start-up got.
        async with contextlib.AsyncExitStack() as stack:
            hypervisor = await stack.enter_async_context(LibvirtDriver(uri))
            caps = await hypervisor.capabilities()
            capacity = await hypervisor.capacity()
            udp = await UdpEndpoint.bind(config.bind, self.security)
            stack.push_async_callback(_close_udp, udp)
            bound = udp.local_address
            advertised = config.advertised()
            if config.bind[1] == 0:
                advertised = (advertised[0], bound[1])
            client = StreamClient(self.security)
            core = Membership(
                MembershipConfig(max_datagram_bytes=udp.max_payload),
                Member(
                    config.name,
                    advertised,
                    meta=member_meta(
                        caps,
                        capacity,
                        config.labels,
                        base_images(config.images_dir),
                        f"http://{config.api[0]}:{config.api[1]}",
                    ),
                ),
                random.Random(),
            )
            node = self.node = MeshNode(core, udp, client)
            stack.push_async_callback(node.close)
            node.listeners.append(_log_member_event)
            # The DHT listens on the gossip port + 1 of every member.
            dht = self.dht = Dht(node_id=node_id_for(config.name))
            await dht.start((config.bind[0], bound[1] + 1), self.security)
            stack.callback(dht.stop)
            server = self._server = await StreamServer.start(
                (config.bind[0], bound[1]), self.security, node.handle_stream
            )
            stack.push_async_callback(_close_server, server)
            runner = web.AppRunner(build_app(self), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, config.api[0], config.api[1]).start()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.request_leave)
                stack.callback(loop.remove_signal_handler, signum)

            node.feed(Start())
            if config.peers:
                node.feed(JoinRequested(tuple(config.peers)))
                seeds = [(host, port + 1) for host, port in config.peers]
                bootstrap = loop.create_task(self._bootstrap_dht(dht, seeds))
                stack.callback(bootstrap.cancel)
            self.status = "running"
            log.info(
                "agent %s on %s:%d (api %s:%d, hypervisor %s)",
                config.name,
                advertised[0],
                advertised[1],
                config.api[0],
                config.api[1],
                uri,
            )
            _notify_systemd("READY=1")
            await self._leave.wait()
            self.status = "leaving"
            _notify_systemd("STOPPING=1")
            node.feed(LeaveRequested())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.left.wait(), LEAVE_TIMEOUT)
        self.status = "stopped"

    async def _bootstrap_dht(self, dht: Dht, seeds: list[tuple[str, int]]) -> None:
        """Retry until some seed answers: the seed may start after us."""
        delay = 0.5
        while True:
            with contextlib.suppress(Exception):
                if await dht.bootstrap(seeds):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _close_udp(udp: UdpEndpoint) -> None:
    udp.close()
    await udp.wait_closed()


async def _close_server(server: StreamServer) -> None:
    server.close()
    await server.wait_closed()


def _log_member_event(event: MemberEvent) -> None:
    member = event.member
    log.info(
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
