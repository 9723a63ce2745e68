"""Resolved descriptor trees, cached per digest for the process: resolving is costly and
runs in a worker thread under the API's resolution lock."""

from __future__ import annotations

import logging
from typing import Any

from sdmesh.agent.api_input import off_loop
from sdmesh.agent.pools.common import PoolError
from sdmesh.pools.records import PoolSpec

log = logging.getLogger(__name__)

_TREES: dict[str, Any] = {}


def spec_tree(spec: PoolSpec) -> Any:
    """The resolved tree of a spec (resolved once per digest per process)."""
    tree = _TREES.get(spec.digest)
    if tree is None:
        from sdmesh.language import resolve_text

        resolved = resolve_text(spec.text, f"<pool {spec.pool}>")
        if resolved.digest() != spec.digest:
            raise PoolError(f"pool {spec.pool}: its descriptor resolves differently here")
        tree = _TREES[spec.digest] = resolved.root
    return tree


def remember_tree(spec: PoolSpec, tree: Any) -> None:
    """Cache a tree resolved at submission (``build_spec_and_tree``): the same descriptor,
    so its canonical text need not be resolved again here."""
    _TREES.setdefault(spec.digest, tree)


async def tree_of(spec: PoolSpec) -> Any:
    """``spec_tree`` from a coroutine: a tree not resolved yet is resolved in a worker thread,
    one resolution at a time with the API's (the resolver changes the interpreter's recursion
    limit); PoolError when that takes longer than the API allows a submission."""
    tree = _TREES.get(spec.digest)
    if tree is not None:
        return tree
    try:
        return await off_loop(lambda: spec_tree(spec))
    except TimeoutError:
        raise PoolError(
            f"pool {spec.pool}: resolving its descriptor took too long (the agent is busy)", 503
        ) from None


def forget_trees(used: set[str]) -> None:
    """Drop the cached trees of every digest not in ``used``."""
    for digest in [d for d in _TREES if d not in used]:
        del _TREES[digest]
