"""Whatever the input, the language answers with located errors, never an exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmesh.language import DescriptorError, resolve_file, resolve_text

EXAMPLE = (
    Path(__file__).resolve().parents[3] / "descriptors" / "examples" / "asyncVirtualPool.sf"
).read_text()


def only_located_errors(text: str, tmp: Path | None = None) -> None:
    try:
        resolve_text(text, "fuzz.sf", cwd=tmp)
    except DescriptorError as error:
        assert error.errors, "a DescriptorError carries at least one error"
        for diagnostic in error.errors:
            assert diagnostic.message
            formatted = diagnostic.format()
            assert "Traceback" not in formatted


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sf"
    path.write_bytes(os.urandom(4096) + b"\x00")
    with pytest.raises(DescriptorError) as info:
        resolve_file(path)
    (diagnostic,) = info.value.errors
    assert diagnostic.location is not None
    assert "binary" in diagnostic.message or "UTF-8" in diagnostic.message


def test_twenty_thousand_nested_braces() -> None:
    text = "sfConfig extends " + "{ a extends " * 20000 + "{}" + "}" * 20000
    with pytest.raises(DescriptorError) as info:
        resolve_text(text)
    assert any("nesting deeper than" in d.message for d in info.value.errors)


def test_deep_vectors_and_parentheses() -> None:
    with pytest.raises(DescriptorError):
        resolve_text("sfConfig extends { a " + "[" * 5000 + "]" * 5000 + "; }")
    with pytest.raises(DescriptorError):
        resolve_text("sfConfig extends { a " + "(" * 5000 + "1" + ")" * 5000 + "; }")


def test_fifty_megabyte_file_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "huge.sf"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    with pytest.raises(DescriptorError) as info:
        resolve_file(path)
    (diagnostic,) = info.value.errors
    assert "limited to 16 MiB" in diagnostic.message


def test_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.sf"
    path.write_bytes(b'sfConfig extends {\n  name "caf\xe9";\n}\n')
    with pytest.raises(DescriptorError) as info:
        resolve_file(path)
    (diagnostic,) = info.value.errors
    assert diagnostic.location is not None
    assert (diagnostic.location.line, diagnostic.location.col) == (2, 12)


def test_error_flood_is_capped() -> None:
    with pytest.raises(DescriptorError) as info:
        resolve_text("sfConfig extends { " + "a 1 2; " * 500 + "}")
    assert len(info.value.errors) == 50


_mutation = st.tuples(
    st.integers(min_value=0, max_value=len(EXAMPLE)),
    st.integers(min_value=0, max_value=12),
    st.text(
        alphabet=st.sampled_from(list('{}[]()|;:,"#-/*\\LAZY extends ATTRIB 0.5L\n\t\x00é')),
        max_size=6,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_tutorial_only_ever_gives_located_errors(
    mutations: list[tuple[int, int, str]],
) -> None:
    text = EXAMPLE
    for position, delete, insert in mutations:
        position = min(position, len(text))
        text = text[:position] + insert + text[position + delete :]
    only_located_errors(text, Path(__file__).parent)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_gives_located_errors(text: str) -> None:
    only_located_errors(text)
