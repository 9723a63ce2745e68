"""The host's two decision points other tracks plug into: admitting a new unit (leases) and
running a leaf of a descriptor (operator signatures)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sdmesh.agent.pools import LeafOp
from sdmesh.pools import host as hc
from sdmesh.pools.records import Order

from .test_pool_hiccups import a_spec, ordered, parts
from .test_pool_service_ends import service

VM = "sfConfig:pool:sd0:vm"


def deploy(path: str, generation: int = 3) -> Order:
    return Order("web", generation, "h1", "d" * 64, path, "deploy", path, 1, 256)


def test_an_admission_veto_refuses_new_units_only(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        svc.host.handle(hc.Recovered("web", VM, VM, 3, "h1", 1, 256))
        asked: list[str] = []

        def no_lease(order: Order) -> str | None:
            asked.append(order.path)
            return "h0 holds no lease"

        svc.admission_guards.append(no_lease)
        other = "sfConfig:pool:sd1:vm"
        assert svc.take_orders([deploy(other)]) == [["refused", "h0 holds no lease", 3]]
        # what it already runs is answered for as ever (a new shepherd's replay)
        assert svc.take_orders([deploy(VM)])[0][0] == "accepted"
        assert asked == [other, VM]
        await svc.close()

    asyncio.run(go())


def test_a_leaf_guard_fails_the_leaf_with_its_reason(tmp_path: Path) -> None:
    async def go() -> None:
        svc = service(tmp_path)
        spec = a_spec()
        ordered(svc, spec)
        _, client = parts(svc)
        client.replies = [{"spec": spec.encode()}]
        seen: list[tuple[str, Any, str]] = []

        def unsigned(spec_: Any, node: Any, op: str) -> str | None:
            seen.append((spec_.digest, node.path, op))
            return "no trusted operator signed this descriptor"

        ops: list[LeafOp] = []
        svc.leaf_guards.append(unsigned)
        svc.leaf_listeners.append(ops.append)
        await svc._run_leaf(hc.RunLeaf("web", VM, "deploy", 3))
        assert seen == [(spec.digest, VM, "deploy")]
        assert ops[-1].state == "failed"
        assert ops[-1].error == "no trusted operator signed this descriptor"
        await svc._run_leaf(hc.RunLeaf("web", VM, "terminate", 3))
        assert len(seen) == 1 and ops[-1].state == "terminated"  # never refused
        await svc.close()

    asyncio.run(go())
