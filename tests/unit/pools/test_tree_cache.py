"""The pool service's cache of resolved trees is bounded (entries and text size), evicts the
least recently used tree, and resolves an evicted tree again, correctly."""

from __future__ import annotations

import pytest

from sdmesh.agent.pools import trees
from sdmesh.pools.submission import build_spec_and_tree


def test_a_flood_of_distinct_trees_stays_within_both_bounds() -> None:
    cache = trees.TreeCache(max_entries=50, max_chars=10_000)
    for i in range(5_000):
        cache.put(f"digest-{i}", object(), 1 + i % 300)
        assert len(cache) <= 50 and cache.chars <= 10_000
    assert cache.chars == sum(1 + i % 300 for i in range(5_000) if f"digest-{i}" in cache)


def test_the_least_recently_used_tree_goes_first() -> None:
    cache = trees.TreeCache(max_entries=3, max_chars=1_000)
    kept = object()
    cache.put("a", kept, 10)
    cache.put("b", object(), 10)
    cache.put("c", object(), 10)
    assert cache.get("a") is kept  # a is now the most recently used
    cache.put("d", object(), 10)
    assert "b" not in cache and {"a", "c", "d"} <= {d for d in "abcd" if d in cache}
    # Size evicts too: one large tree pushes out as many old ones as it needs.
    cache.put("e", object(), 995)
    assert [d for d in "abcde" if d in cache] == ["e"] and cache.chars == 995


def test_the_cached_tree_wins_and_a_tree_above_the_budget_is_kept_alone() -> None:
    """The shepherd looks a tree up right after resolving it: the newest one always stays."""
    cache = trees.TreeCache(max_entries=3, max_chars=100)
    first = object()
    assert cache.put("a", first, 10) is first
    assert cache.put("a", object(), 10) is first and cache.chars == 10
    huge = object()
    assert cache.put("z", huge, 101) is huge
    assert "a" not in cache and cache.get("z") is huge and len(cache) == 1
    assert cache.put("b", first, 10) is first
    assert "z" not in cache and cache.chars == 10


def test_submissions_flooding_the_cache_evict_and_an_evicted_tree_resolves_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trees, "_TREES", trees.TreeCache(max_entries=8, max_chars=4_000))
    specs = []
    for i in range(40):  # what POST /v1/pools does with each submission (api.py)
        body = {"name": f"p{i}", "descriptor": f'sfConfig extends {{ x {i}; y "{"v" * i}"; }}'}
        spec, tree = build_spec_and_tree(body)
        trees.remember_tree(spec, tree)
        specs.append(spec)
        assert len(trees._TREES) <= 8 and trees._TREES.chars <= 4_000
    first = specs[0]
    assert first.digest not in trees._TREES
    again = trees.spec_tree(first)  # resolved again, in process, from its canonical text
    assert again.get("x") == 0 and again.get("y") == ""
    assert first.digest in trees._TREES and trees.spec_tree(first) is again
    assert trees.spec_tree(specs[-1]).get("x") == 39
