"""Resolved descriptor trees, cached per digest for the process: resolving is costly and
runs in the resolver worker process (sdmesh.pools.resolve_worker: bounded, killable, under the
agent's resolution policy, which never reads this host's files or environment)."""

from __future__ import annotations

import logging
from typing import Any

from sdmesh.agent.pools.common import PoolError
from sdmesh.pools.records import PoolSpec

log = logging.getLogger(__name__)

_TREES: dict[str, Any] = {}


def spec_tree(spec: PoolSpec) -> Any:
    """The resolved tree of a spec (resolved once per digest per process), in process: for
    callers that cannot await. Still under the agent's policy: a spec arriving from another
    agent resolves against the built-in library only, never this host's files or environment."""
    tree = _TREES.get(spec.digest)
    if tree is None:
        from sdmesh.pools.submission import SubmissionError, resolve_spec_tree

        try:
            tree = _TREES[spec.digest] = resolve_spec_tree(spec)
        except SubmissionError as error:
            raise PoolError(f"pool {spec.pool}: {error}") from None
    return tree


def remember_tree(spec: PoolSpec, tree: Any) -> None:
    """Cache a tree resolved at submission (``build_spec_and_tree``): the same descriptor,
    so its canonical text need not be resolved again here."""
    _TREES.setdefault(spec.digest, tree)


async def tree_of(spec: PoolSpec) -> Any:
    """``spec_tree`` from a coroutine, resolved in the resolver worker process; PoolError 503
    when the worker is busy or was stopped (callers retry), 400 when it does not resolve."""
    tree = _TREES.get(spec.digest)
    if tree is not None:
        return tree
    from sdmesh.pools.resolve_worker import ResolutionStopped, spec_tree_in_worker
    from sdmesh.pools.submission import SubmissionError

    try:
        tree = await spec_tree_in_worker(spec)
    except ResolutionStopped as error:
        raise PoolError(f"pool {spec.pool}: {error}", 503) from None
    except SubmissionError as error:
        raise PoolError(f"pool {spec.pool}: {error}") from None
    return _TREES.setdefault(spec.digest, tree)


def forget_trees(used: set[str]) -> None:
    """Drop the cached trees of every digest not in ``used``."""
    for digest in [d for d in _TREES if d not in used]:
        del _TREES[digest]
