"""What a host checks before it acts on a request: that a stream comes from the member it
names, and that a leaf runs under a trusted operator's signature (docs/security.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdmesh.agent.mesh import MeshNode

if TYPE_CHECKING:
    from sdmesh.agent.pools import PoolService
    from sdmesh.lifecycle.model import Node
    from sdmesh.pools.records import PoolSpec
    from sdmesh.trust.host import HostTrust


def sent_by(node: MeshNode, peer: tuple[str, int]) -> Callable[[str], bool]:
    """Whether a stream request from ``peer`` can come from member ``name`` (same host)."""

    def check(name: str) -> bool:
        member = node.core.member(name)
        return member is not None and member.addr[0] == peer[0]

    return check


def signature_guard(
    trust: HostTrust,
    pools: PoolService,
    publish: Callable[[dict[str, Any]], None] = lambda event: None,
) -> Callable[[PoolSpec, Node, str], str | None]:
    """The leaf guard that runs a leaf only under a trusted operator's signature covering this
    descriptor, this pool and the leaf's class (sdmesh.pools.signing.leaf_refusal); the
    refusal's reason fails the leaf, is counted in ``trust.refusals`` and ``publish``-ed as a
    ``refused`` event (``GET /v1/events``)."""
    from sdmesh.pools.signing import leaf_refusal
    from sdmesh.trust.authorize import refusal_event

    def guard(spec: PoolSpec, node: Node, op: str) -> str | None:
        signature = pools.signature_of(spec.pool)
        refusal = leaf_refusal(trust, signature, spec, spec.pool, node, time.time())
        if refusal is None:
            return None
        publish(refusal_event(refusal, spec.pool, node.path, pools.name))
        return refusal.message

    return guard
