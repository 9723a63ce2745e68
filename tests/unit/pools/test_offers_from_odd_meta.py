"""A member's metadata is checked for shape and finite numbers only (membership/wire.py):
capacity figures of the wrong type place nothing on that member and raise nowhere (``int()``
of a string raised in every shepherd's placement)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from .test_pool_service_ends import service


@pytest.mark.parametrize(
    "meta",
    [
        {"capacity": {"vcpus": "eight", "memory_mib": 4096}},
        {"capacity": {"vcpus": 8, "memory_mib": "lots"}, "labels": 5},
        {"capacity": {"vcpus": [8], "memory_mib": True}, "labels": "gpu"},
        {"capacity": {"vcpus": -3, "memory_mib": 4096}},
    ],
)
def test_odd_capacity_figures_offer_nothing_and_raise_nowhere(
    tmp_path: Path, meta: dict[str, object]
) -> None:
    async def go() -> None:
        svc = service(tmp_path, ["h0", "h1", "h2"])
        good = {"capacity": {"vcpus": 4, "memory_mib": 4096}, "labels": ["ssd"]}
        svc.node.core.m["h1"] = dataclasses.replace(svc.node.core.m["h1"], meta=good)
        svc.node.core.m["h2"] = dataclasses.replace(svc.node.core.m["h2"], meta=meta)
        offers = {o.name: o for o in svc.offers()}
        assert offers["h1"].vcpus == 4 and offers["h1"].labels == frozenset({"ssd"})
        odd = offers.get("h2")
        assert odd is None or (odd.vcpus, odd.memory_mib) in ((8, 0), (0, 0)), odd
        if odd is not None:
            assert odd.labels == frozenset()
        await svc.close()

    asyncio.run(go())
