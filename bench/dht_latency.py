"""DHT get latency with 10% of nodes dead: the stock ``kademlia`` package against sdmesh's ``Dht``.

Both run the same scenario in one process on 127.0.0.1, one after the other: N nodes join
through the first, K keys are written from random nodes, the same 10% of nodes (by index)
are stopped abruptly (socket closed, no goodbye), then G gets of existing keys are issued
from random live nodes, C at a time. The stock nodes are raw ``kademlia.network.Server``s
(unsealed UDP, fixed 5 s RPC timeout); ours seal every datagram and authenticate records.

    .venv/bin/python bench/dht_latency.py [--nodes 40] [--gets 200] [--concurrency 10]

Figures, never asserted. Note the stock ``get`` answers from local storage when the asking
node holds a replica (no network at all), while ``Dht.get`` always asks the k closest nodes,
because only that finds the newest version.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kademlia.network import Server

from sdmesh.dht import Dht
from sdmesh.transport import Keyring, TransportSecurity

LOOPBACK = "127.0.0.1"


@dataclass
class Result:
    name: str
    latencies: list[float]
    found: int
    setup_seconds: float

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Scenario:
    nodes: int
    keys: int
    gets: int
    concurrency: int
    dead: list[int]
    writers: list[int]
    reads: list[tuple[int, int]]
    """(live node index, key index) per get."""


def make_scenario(nodes: int, keys: int, gets: int, concurrency: int, seed: int) -> Scenario:
    rng = random.Random(seed)
    dead = sorted(rng.sample(range(1, nodes), max(1, nodes // 10)))
    live = [i for i in range(nodes) if i not in dead]
    writers = [rng.randrange(nodes) for _ in range(keys)]
    reads = [(rng.choice(live), rng.randrange(keys)) for _ in range(gets)]
    return Scenario(nodes, keys, gets, concurrency, dead, writers, reads)


async def timed_gets(
    scenario: Scenario, get: Callable[[int, str], Awaitable[bytes | None]]
) -> tuple[list[float], int]:
    slots = asyncio.Semaphore(scenario.concurrency)
    latencies: list[float] = []
    found = 0

    async def one(node: int, key: int) -> None:
        nonlocal found
        async with slots:
            start = time.perf_counter()
            value = await get(node, f"pool-{key}")
            latencies.append(time.perf_counter() - start)
            found += value == value_for(key)

    await asyncio.gather(*(one(node, key) for node, key in scenario.reads))
    return latencies, found


def value_for(key: int) -> bytes:
    return f"descriptor of pool {key}".encode() * 8


async def run_stock(scenario: Scenario) -> Result:
    start = time.perf_counter()
    servers = [Server() for _ in range(scenario.nodes)]
    for server in servers:
        await server.listen(0, LOOPBACK)
    seed = servers[0].transport.get_extra_info("sockname")[:2]
    await asyncio.gather(*(server.bootstrap([seed]) for server in servers[1:]))
    for key, writer in enumerate(scenario.writers):
        await servers[writer].set(f"pool-{key}", value_for(key))
    for index in scenario.dead:
        servers[index].stop()
    setup = time.perf_counter() - start

    async def get(node: int, key: str) -> bytes | None:
        value = await servers[node].get(key)
        return value if isinstance(value, bytes) else None

    latencies, found = await timed_gets(scenario, get)
    for index, server in enumerate(servers):
        if index not in scenario.dead:
            server.stop()
    return Result("stock kademlia", latencies, found, setup)


async def run_hardened(scenario: Scenario) -> Result:
    start = time.perf_counter()
    security = TransportSecurity(Keyring.generate(), cluster="bench")
    nodes = [Dht() for _ in range(scenario.nodes)]
    for node in nodes:
        await node.start((LOOPBACK, 0), security)
    seed = nodes[0].address
    await asyncio.gather(*(node.bootstrap([seed]) for node in nodes[1:]))
    for key, writer in enumerate(scenario.writers):
        await nodes[writer].put(f"pool-{key}", value_for(key), generation=1)
    for index in scenario.dead:
        nodes[index].stop()
    setup = time.perf_counter() - start

    async def get(node: int, key: str) -> bytes | None:
        record = await nodes[node].get(key)
        return record.value if record else None

    latencies, found = await timed_gets(scenario, get)
    for index, node in enumerate(nodes):
        if index not in scenario.dead:
            node.stop()
    return Result("sdmesh Dht", latencies, found, setup)


def report(scenario: Scenario, results: Sequence[Result]) -> None:
    print(
        f"{scenario.nodes} nodes, {len(scenario.dead)} dead ({scenario.dead}), "
        f"{scenario.keys} keys, {scenario.gets} gets from random live nodes, "
        f"{scenario.concurrency} at a time"
    )
    header = f"{'':16} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'mean ms':>9} {'found':>9}"
    print(header)
    for result in results:
        print(
            f"{result.name:16} {result.percentile(0.50) * 1000:9.1f} "
            f"{result.percentile(0.99) * 1000:9.1f} {max(result.latencies) * 1000:9.1f} "
            f"{statistics.fmean(result.latencies) * 1000:9.1f} "
            f"{result.found:>5}/{len(result.latencies)}"
        )
    stock, ours = results
    print(
        f"{'stock / ours':16} {stock.percentile(0.5) / ours.percentile(0.5):9.1f}x "
        f"{stock.percentile(0.99) / ours.percentile(0.99):8.1f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    for name in ("kademlia", "rpcudp", "sdmesh"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scenario = make_scenario(args.nodes, args.keys, args.gets, args.concurrency, args.seed)
    stock = await run_stock(scenario)
    ours = await run_hardened(scenario)
    report(scenario, [stock, ours])


if __name__ == "__main__":
    asyncio.run(main())
