"""Resolved descriptor trees, cached per digest for the process: resolving is costly and
runs in the resolver worker process (sdmesh.pools.resolve_worker: bounded, killable, under the
agent's resolution policy, which never reads this host's files or environment).

The cache is bounded, in entries and in the size of the canonical text the trees were
resolved from (a tree's memory grows with it), and evicts the least recently used tree: every
submission caches its tree, even one refused later or a dry run, so without a bound a caller
could grow it at will. An evicted tree is resolved again when next needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Final

from sdmesh.agent.pools.common import PoolError
from sdmesh.pools.records import PoolSpec

log = logging.getLogger(__name__)

MAX_TREES: Final = 128
"""Trees kept: far more pools than one host shepherds or hosts at once."""
MAX_TREE_CHARS: Final = 16 * 1024 * 1024
"""Canonical text behind the trees kept: a resolved tree holds about nine times its text in
memory, so about 150 MB at most. One tree larger than this is kept alone (the shepherd looks
its tree up again right after resolving it, and resolving on the loop is what the cache is
for)."""


class TreeCache:
    """Least-recently-used trees by spec digest, within ``max_entries`` and ``max_chars``."""

    def __init__(self, max_entries: int = MAX_TREES, max_chars: int = MAX_TREE_CHARS) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._trees: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._trees)

    def __contains__(self, digest: object) -> bool:
        return digest in self._trees

    @property
    def chars(self) -> int:
        """Canonical text behind the cached trees."""
        return self._chars

    def get(self, digest: str) -> Any | None:
        entry = self._trees.get(digest)
        if entry is None:
            return None
        self._trees.move_to_end(digest)
        return entry[0]

    def put(self, digest: str, tree: Any, chars: int) -> Any:
        """Keep ``tree`` (the one already cached for ``digest`` wins, as ``setdefault``) and
        return the cached one. The newest tree always stays, alone if it is over budget."""
        cached = self.get(digest)
        if cached is not None:
            return cached
        self._trees[digest] = (tree, chars)
        self._chars += chars
        while len(self._trees) > 1 and (
            len(self._trees) > self.max_entries or self._chars > self.max_chars
        ):
            _, (_, evicted) = self._trees.popitem(last=False)
            self._chars -= evicted
        return tree

    def forget_except(self, used: set[str]) -> None:
        """Drop the trees of every digest not in ``used``."""
        for digest in [d for d in self._trees if d not in used]:
            _, chars = self._trees.pop(digest)
            self._chars -= chars


_TREES = TreeCache()


def spec_tree(spec: PoolSpec) -> Any:
    """The resolved tree of a spec (resolved once per digest while cached), in process: for
    callers that cannot await. Still under the agent's policy: a spec arriving from another
    agent resolves against the built-in library only, never this host's files or environment."""
    tree = _TREES.get(spec.digest)
    if tree is None:
        from sdmesh.pools.submission import SubmissionError, resolve_spec_tree

        try:
            tree = _TREES.put(spec.digest, resolve_spec_tree(spec), len(spec.text))
        except SubmissionError as error:
            raise PoolError(f"pool {spec.pool}: {error}") from None
    return tree


def remember_tree(spec: PoolSpec, tree: Any) -> None:
    """Cache a tree resolved at submission (``build_spec_and_tree``): the same descriptor,
    so its canonical text need not be resolved again here."""
    _TREES.put(spec.digest, tree, len(spec.text))


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
    return _TREES.put(spec.digest, tree, len(spec.text))


def forget_trees(used: set[str]) -> None:
    """Drop the cached trees of every digest not in ``used``."""
    _TREES.forget_except(used)
