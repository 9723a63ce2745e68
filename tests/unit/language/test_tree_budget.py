"""The resolver's cap on what extends and links may copy: a few hundred bytes that extend
(or link) twice per level would otherwise ask for 2**levels copies; real pools, the 1,000-VM
bench pool included, stay far below it."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import pytest

from sdmesh.language import ComponentDescription, DescriptorError, resolve_text
from sdmesh.language.resolver import MAX_COMPONENTS

BENCH = Path(__file__).resolve().parents[3] / "bench"


def doubling(levels: int, link: bool = False) -> str:
    """``L{i} extends { a extends L{i-1}; b extends L{i-1}; }`` (or links to L{i-1})."""
    lines = ["L0 extends { x 1; }"]
    for i in range(1, levels + 1):
        if link:
            lines.append(f"L{i} extends {{ a L{i - 1}; b L{i - 1}; }}")
        else:
            lines.append(f"L{i} extends {{ a extends L{i - 1}; b extends L{i - 1}; }}")
    lines.append(f"sfConfig extends L{levels};")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("link", [False, True], ids=["extends", "links"])
def test_a_descriptor_that_doubles_per_level_is_refused_quickly(link: bool) -> None:
    text = doubling(24, link)
    assert len(text) < 1200
    started = time.monotonic()
    with pytest.raises(DescriptorError) as caught:
        resolve_text(text, "doubling.sf")
    assert time.monotonic() - started < 5
    errors = caught.value.errors
    assert len(errors) == 1
    message = errors[0].format()
    assert f"the resolved tree exceeds {MAX_COMPONENTS:,} components" in message
    assert message.startswith("doubling.sf:")  # located at the extends or link that did it


def test_a_few_levels_of_doubling_still_resolve() -> None:
    resolved = resolve_text(doubling(8), "small.sf")
    assert "a" in resolved.root.attrs


def test_the_bench_pool_of_1000_vms_still_resolves() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        pool_text = importlib.import_module("pool_mesh").pool_text
    finally:
        sys.path.remove(str(BENCH))
    resolved = resolve_text(pool_text(1000), "bench.sf")
    pool = resolved.root.attrs["pool"].value
    assert isinstance(pool, ComponentDescription)
    assert sum(1 for name in pool.attrs if name.startswith("vm")) == 1000


def test_the_cap_is_per_resolution() -> None:
    """Two resolutions in a row each get the whole budget."""
    for _ in range(2):
        resolve_text(doubling(10), "again.sf")
