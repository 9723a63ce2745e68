"""Drives a :class:`~sdmesh.dht.lookup.Lookup` over the network, alpha requests at a time.

Why not a ``SpiderCrawl`` subclass: the package's crawlers are built around rounds
(``_find`` gathers a whole round, then recurses), which is exactly what keeps a lookup
waiting on its slowest peer; nothing of them would survive an override. The decisions live in
the sans-IO ``Lookup``; this loop only starts requests and feeds their outcomes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sdmesh.dht.lookup import Contact, Lookup

logger = logging.getLogger(__name__)

Query = Callable[[Contact], Awaitable[list[Contact] | None]]
"""Ask one contact; its closer contacts, or ``None`` if it did not answer properly."""


async def run_lookup(
    lookup: Lookup,
    query: Query,
    adopt: Callable[[asyncio.Future[Any]], None],
    *,
    enough: Callable[[], bool] | None = None,
) -> list[Contact]:
    """Run ``lookup`` until it finishes (or ``enough()`` says the caller has what it needs,
    checked after each answer); returns the k closest contacts that answered.

    Requests still in flight when the lookup finishes (to contacts no longer among the k
    closest) are handed to ``adopt`` rather than cancelled: their outcome still feeds the RTT
    estimates and contact health.
    """
    pending: dict[asyncio.Future[list[Contact] | None], Contact] = {}
    try:
        while enough is None or not enough():
            for contact in lookup.next_queries():
                pending[asyncio.ensure_future(query(contact))] = contact
            if lookup.finished or not pending:
                break
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                contact = pending.pop(task)
                result = _outcome(task)
                if result is None:
                    lookup.failed(contact.id)
                else:
                    lookup.answered(contact.id, result)
        return lookup.closest()
    finally:
        for task in pending:
            adopt(task)


def _outcome(task: asyncio.Future[list[Contact] | None]) -> list[Contact] | None:
    if task.cancelled():
        return None
    error = task.exception()
    if error is not None:
        logger.error("DHT lookup query failed", exc_info=error)
        return None
    return task.result()
