"""The lookup driver: a hung peer occupies one slot, never the whole lookup."""

from __future__ import annotations

import asyncio
from typing import Any

from sdmesh.dht.crawl import run_lookup
from sdmesh.dht.ids import ID_SIZE
from sdmesh.dht.lookup import Contact, Lookup

TARGET = b"\x00" * ID_SIZE


def c(n: int) -> Contact:
    return Contact(n.to_bytes(ID_SIZE, "big"), "127.0.0.1", 1000 + n)


def number(contact: Contact) -> int:
    return int.from_bytes(contact.id, "big")


async def test_a_hung_peer_pushed_out_of_the_k_closest_is_not_waited_for() -> None:
    hang = asyncio.get_running_loop().create_future()
    asked: list[int] = []
    adopted: list[asyncio.Future[Any]] = []

    async def query(contact: Contact) -> list[Contact] | None:
        asked.append(number(contact))
        if number(contact) == 10:
            await hang  # never answers during the lookup
        if number(contact) == 11:
            return [c(1), c(2)]
        return []

    lookup = Lookup(TARGET, [c(10), c(11)], k=2, alpha=2)
    closest = await asyncio.wait_for(run_lookup(lookup, query, adopted.append), timeout=1.0)
    assert [number(x) for x in closest] == [1, 2]
    assert sorted(asked) == [1, 2, 10, 11]
    assert len(adopted) == 1 and not adopted[0].done()  # left running, not cancelled
    hang.set_result(None)
    await adopted[0]


async def test_answers_start_new_requests_while_a_slow_one_is_outstanding() -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def query(contact: Contact) -> list[Contact] | None:
        started.append(number(contact))
        if number(contact) == 1:
            await release.wait()
            return None  # times out in the end
        return []

    lookup = Lookup(TARGET, [c(n) for n in range(1, 6)], k=4, alpha=2)
    task = asyncio.ensure_future(run_lookup(lookup, query, lambda task: None))
    for _ in range(20):
        await asyncio.sleep(0)
    assert started == [1, 2, 3, 4]  # 2, 3, 4 went one after another in the second slot
    assert not task.done()  # contact 1 is among the 4 closest: its outcome is needed
    release.set()
    assert [number(x) for x in await task] == [2, 3, 4, 5]  # 5 moved up when 1 failed
    assert started == [1, 2, 3, 4, 5]


async def test_enough_stops_the_lookup_before_it_asks_anyone_else() -> None:
    answers = 0

    async def query(contact: Contact) -> list[Contact] | None:
        nonlocal answers
        answers += 1
        return [c(n) for n in range(1, 30)]

    lookup = Lookup(TARGET, [c(40)], k=20, alpha=3)
    closest = await run_lookup(lookup, query, lambda task: None, enough=lambda: answers >= 1)
    assert lookup.queries == 1
    assert [number(x) for x in closest] == [40]


async def test_a_query_that_raises_counts_as_a_failure() -> None:
    async def query(contact: Contact) -> list[Contact] | None:
        if number(contact) == 1:
            raise RuntimeError("bug")
        return []

    closest = await run_lookup(Lookup(TARGET, [c(1), c(2)], k=2, alpha=2), query, lambda t: None)
    assert [number(x) for x in closest] == [2]
