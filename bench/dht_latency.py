"""DHT get latency with 10% of nodes dead: the stock ``kademlia`` package against sdmesh's ``Dht``.

Both run the same scenario in one process on 127.0.0.1, one after the other: N nodes join
through the first, one after another; K keys are written from random nodes; the same 10% of
nodes (by index) are stopped abruptly (socket closed, no goodbye); then G gets of existing
keys are issued from random live nodes, C at a time. The stock nodes are raw
``kademlia.network.Server``s (unsealed UDP, fixed 5 s RPC timeout); ours seal every datagram
and authenticate records. Ours run twice, on fresh clusters: the default get (hears from all
of the k closest live nodes) and ``get(quorum=3)``.

    .venv/bin/python bench/dht_latency.py [--nodes 40] [--gets 200] [--concurrency 10]

Figures, never asserted. The stock ``get`` answers from local storage when the asking node
holds a replica (no network at all, and possibly stale), so its p50 is near zero; the row
"its gets not held locally" shows the ones that went to the network.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kademlia.network import Server
from kademlia.utils import digest

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
        return percentile(self.latencies, fraction)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
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
    scenario: Scenario,
    get: Callable[[int, str], Awaitable[bytes | None]],
    held_locally: Callable[[int, str], bool] = lambda node, key: False,
) -> tuple[list[float], int, list[float]]:
    """Latencies of all gets, how many found the value, and latencies of the gets the
    asking node could not answer from its own storage."""
    slots = asyncio.Semaphore(scenario.concurrency)
    latencies: list[float] = []
    remote: list[float] = []
    found = 0

    async def one(node: int, key: int) -> None:
        nonlocal found
        async with slots:
            local = held_locally(node, f"pool-{key}")
            start = time.perf_counter()
            value = await get(node, f"pool-{key}")
            latencies.append(time.perf_counter() - start)
            if not local:
                remote.append(latencies[-1])
            found += value == value_for(key)

    await asyncio.gather(*(one(node, key) for node, key in scenario.reads))
    return latencies, found, remote


def value_for(key: int) -> bytes:
    return f"descriptor of pool {key}".encode() * 8


async def run_stock(scenario: Scenario) -> tuple[Result, list[float]]:
    start = time.perf_counter()
    servers = [Server() for _ in range(scenario.nodes)]
    for server in servers:
        await server.listen(0, LOOPBACK)
    seed = servers[0].transport.get_extra_info("sockname")[:2]
    for server in servers[1:]:  # hosts join one after another, as they boot
        await server.bootstrap([seed])
    for key, writer in enumerate(scenario.writers):
        await servers[writer].set(f"pool-{key}", value_for(key))
    for index in scenario.dead:
        servers[index].stop()
    setup = time.perf_counter() - start

    async def get(node: int, key: str) -> bytes | None:
        value = await servers[node].get(key)
        return value if isinstance(value, bytes) else None

    def held_locally(node: int, key: str) -> bool:
        return servers[node].storage.get(digest(key)) is not None

    latencies, found, remote = await timed_gets(scenario, get, held_locally)
    for index, server in enumerate(servers):
        if index not in scenario.dead:
            server.stop()
    return Result("stock kademlia", latencies, found, setup), remote


async def run_hardened(scenario: Scenario, quorum: int | None) -> Result:
    start = time.perf_counter()
    security = TransportSecurity(Keyring.generate(), cluster="bench")
    nodes = [Dht() for _ in range(scenario.nodes)]
    for node in nodes:
        await node.start((LOOPBACK, 0), security)
    seed = nodes[0].address
    for node in nodes[1:]:
        await node.bootstrap([seed])
    for key, writer in enumerate(scenario.writers):
        await nodes[writer].put(f"pool-{key}", value_for(key), generation=1)
    for index in scenario.dead:
        nodes[index].stop()
    setup = time.perf_counter() - start

    async def get(node: int, key: str) -> bytes | None:
        record = await nodes[node].get(key, quorum=quorum)
        return record.value if record else None

    latencies, found, _ = await timed_gets(scenario, get)
    for index, node in enumerate(nodes):
        if index not in scenario.dead:
            node.stop()
    name = "sdmesh Dht" if quorum is None else f"sdmesh Dht, quorum={quorum}"
    return Result(name, latencies, found, setup)


def report(
    scenario: Scenario, stock: Result, stock_remote: list[float], ours: list[Result]
) -> None:
    print(
        f"{scenario.nodes} nodes, {len(scenario.dead)} dead {scenario.dead}, "
        f"{scenario.keys} keys, {scenario.gets} gets from random live nodes, "
        f"{scenario.concurrency} at a time"
    )
    print(f"{'':28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} {'found':>9}")
    rows = [
        (stock.name, stock.latencies, f"{stock.found}/{len(stock.latencies)}"),
        ("  its gets not held locally", stock_remote, f"({len(stock_remote)})"),
        *(
            (result.name, result.latencies, f"{result.found}/{len(result.latencies)}")
            for result in ours
        ),
    ]
    for name, samples, found in rows:
        if samples:
            print(
                f"{name:28} {percentile(samples, 0.50) * 1000:8.1f} "
                f"{percentile(samples, 0.99) * 1000:8.1f} {max(samples) * 1000:8.1f} "
                f"{statistics.fmean(samples) * 1000:8.1f} {found:>9}"
            )
    for result in ours:
        ratio = stock.percentile(0.99) / result.percentile(0.99)
        print(f"p99 {stock.name} / {result.name}: {ratio:.1f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--quorum", type=int, default=3, help="also run Dht.get(quorum=N)")
    args = parser.parse_args()
    for name in ("kademlia", "rpcudp", "sdmesh"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scenario = make_scenario(args.nodes, args.keys, args.gets, args.concurrency, args.seed)
    stock, stock_remote = await run_stock(scenario)
    ours = [await run_hardened(scenario, None), await run_hardened(scenario, args.quorum)]
    report(scenario, stock, stock_remote, ours)


if __name__ == "__main__":
    asyncio.run(main())
