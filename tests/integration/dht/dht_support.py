"""Clusters of DHT nodes in one process on 127.0.0.1, for the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sdmesh.dht import Dht, DhtConfig, RttConfig
from sdmesh.dht.ids import distance, location_of
from sdmesh.transport import Keyring, TransportSecurity

LOCAL = ("127.0.0.1", 0)
CLUSTER_KEY = bytes([1]) * 32
FOREIGN_KEY = bytes([2]) * 32


def tolerant_config(**settings: object) -> DhtConfig:
    """The defaults, but a 200 ms floor on RPC timeouts: every node shares one event loop
    here, and on a loaded test machine a 50 ms stall of that loop looks like a dead peer."""
    return DhtConfig(rtt=RttConfig(minimum=0.2), **settings)  # type: ignore[arg-type]


def security(key: bytes = CLUSTER_KEY) -> TransportSecurity:
    return TransportSecurity(Keyring([key]), cluster="it")


async def start_node(
    config: DhtConfig | None = None,
    sec: TransportSecurity | None = None,
    node_id: bytes | None = None,
) -> Dht:
    node = Dht(config or tolerant_config(), node_id=node_id)
    await node.start(LOCAL, sec or security())
    return node


async def start_cluster(
    size: int, config: DhtConfig | None = None, sec: TransportSecurity | None = None
) -> list[Dht]:
    """``size`` nodes, all joined through the first (as hosts join through a seed peer)."""
    nodes = [await start_node(config, sec) for _ in range(size)]
    await asyncio.gather(*(node.bootstrap([nodes[0].address]) for node in nodes[1:]))
    return nodes


def stop_all(nodes: list[Dht]) -> None:
    for node in nodes:
        node.stop()


def k_closest(nodes: list[Dht], key: str, k: int) -> list[Dht]:
    location = location_of(key.encode())
    return sorted(nodes, key=lambda node: distance(node.node_id, location))[:k]


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
