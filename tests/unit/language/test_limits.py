"""Issue 11.5: values are bounded as well as components. Each reproduction of the issue (1.3 KB
of doubling ``++`` reached 1.7 GB; a vector of references grew ~9x per level) ends in well
under a second with one located error naming the bound; real pools are far from every bound."""

from __future__ import annotations

import importlib
import resource
import sys
import time
from pathlib import Path

import pytest

from sdmesh.language import DescriptorError, resolve_text
from sdmesh.language.limits import Limits
from sdmesh.language.policy import ResolutionPolicy, agent_policy

BENCH = Path(__file__).resolve().parents[3] / "bench"
HEAD = '#include "/org/smartfrog/components.sf"'


def refused(text: str, policy: ResolutionPolicy | None = None) -> tuple[str, float]:
    """(the error text, seconds taken) of a descriptor that must be refused."""
    started = time.perf_counter()
    with pytest.raises(DescriptorError) as info:
        resolve_text(text, "<pool p>", policy=policy or agent_policy())
    return info.value.format(), time.perf_counter() - started


def doubling_strings(levels: int) -> str:
    lines = [HEAD, "sfConfig extends Compound {", '  s0 "xxxxxxxxxxxxxxxx";']
    lines += [f"  s{i} (s{i - 1} ++ s{i - 1});" for i in range(1, levels + 1)]
    return "\n".join([*lines, "}"])


def fan_out(levels: int) -> str:
    lines = [HEAD, "sfConfig extends Compound {", "  v0 [|" + ", ".join(['"x"'] * 9) + "|];"]
    lines += [f"  v{i} [{', '.join([f'v{i - 1}'] * 9)}];" for i in range(1, levels + 1)]
    return "\n".join([*lines, "}"])


def test_doubling_concat_is_refused_quickly_and_small() -> None:
    text = doubling_strings(60)
    assert len(text) < 1600
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shown, seconds = refused(text)
    assert "max_string" in shown and "<pool p>:20:" in shown  # s17 is the first over 1 MiB
    assert seconds < 2
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


def test_reference_fan_out_is_refused_by_expanded_size() -> None:
    shown, seconds = refused(fan_out(8))
    assert "max_vector" in shown and "<pool p>:8:" in shown  # v5 = 9**6 items
    assert seconds < 2


def test_integers_cannot_square_their_way_to_megabytes() -> None:
    lines = [HEAD, "sfConfig extends Compound {", "  n0 12345;"]
    lines += [f"  n{i} (n{i - 1} * n{i - 1});" for i in range(1, 40)]
    shown, seconds = refused("\n".join([*lines, "}"]))
    assert "max_int_bits" in shown and seconds < 2


def test_format_string_cannot_multiply_a_value() -> None:
    big = "y" * 4000
    text = (
        f'{HEAD}\nsfConfig extends Compound {{ s "{big}"; '
        f'f extends formatString {{ format "{"$1" * 400}"; s1 s; }} }}'
    )
    shown, _ = refused(text)
    assert "formatString makes a string over" in shown


def test_vectors_nested_too_deep() -> None:
    lines = [HEAD, "sfConfig extends Compound {", "  v0 [|1|];"]
    lines += [f"  v{i} [v{i - 1}];" for i in range(1, 260)]
    shown, _ = refused("\n".join([*lines, "}"]))
    assert "max_depth" in shown


def test_a_large_value_linked_many_times_passes_the_tree_total() -> None:
    limits = Limits(max_total=100_000)
    lines = [HEAD, "sfConfig extends Compound {", f'  s "{"z" * 20_000}";']
    lines += [f"  c{i} s;" for i in range(10)]
    shown, _ = refused("\n".join([*lines, "}"]), agent_policy(limits=limits))
    assert "max_total" in shown


def test_steps_are_bounded() -> None:
    limits = Limits(max_steps=200)
    lines = [HEAD, "sfConfig extends Compound {", "  a0 1;"]
    lines += [f"  a{i} a{i - 1};" for i in range(1, 300)]
    shown, _ = refused("\n".join([*lines, "}"]), agent_policy(limits=limits))
    assert "max_steps" in shown


def test_created_cells_are_bounded() -> None:
    limits = Limits(max_created=50_000)
    lines = [HEAD, "sfConfig extends Compound {", f'  s "{"q" * 1000}";']
    lines += [f'  c{i} (s ++ "{i}");' for i in range(100)]
    shown, _ = refused("\n".join([*lines, "}"]), agent_policy(limits=limits))
    assert "max_created" in shown


def test_the_1000_vm_bench_pool_is_far_from_every_bound() -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        pool_text = importlib.import_module("bench.pool_mesh").pool_text
    finally:
        sys.path.remove(str(BENCH.parent))
    resolved = resolve_text(pool_text(1000), "bench.sf")
    tight = Limits(max_steps=20_000, max_total=2_000_000, max_created=1_000, max_depth=20)
    again = resolve_text(resolved.to_sf(), "<pool p>", policy=agent_policy(limits=tight))
    assert again.digest() == resolved.digest()
