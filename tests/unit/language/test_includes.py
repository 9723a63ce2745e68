"""#include: splicing, lookup order, the built-in library, cycles and missing files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sdmesh.language import ResolvedDescriptor, resolve_file

Resolve = Callable[..., ResolvedDescriptor]
Errors = Callable[..., list[str]]


def test_include_at_top_level_and_inside_a_body(resolve: Resolve) -> None:
    result = resolve(
        '#include "defs.sf"\nsfConfig extends { inner extends { #include "defs.sf" } v X; }',
        **{"defs.sf": "X 1; Y 2;"},
    )
    assert result.to_json() == {"inner": {"X": 1, "Y": 2}, "v": 1}


def test_later_include_replaces_values_in_place(resolve: Resolve) -> None:
    result = resolve(
        'sfConfig extends { #include "a.sf" #include "b.sf" }',
        **{"a.sf": "x 1; y 2;", "b.sf": "x 10;"},
    )
    assert list(result.to_json().items()) == [("x", 10), ("y", 2)]  # type: ignore[union-attr]


def test_including_file_directory_comes_before_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "main.sf").write_text('#include "v.sf"\nsfConfig extends { v V; }')
    (tmp_path / "lib" / "v.sf").write_text('V "from including dir";')
    (tmp_path / "v.sf").write_text('V "from cwd";')
    monkeypatch.chdir(tmp_path)
    assert resolve_file(tmp_path / "lib" / "main.sf").to_json() == {"v": "from including dir"}


def test_sdmesh_path_and_include_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "roots" / "a" / "x").mkdir(parents=True)
    (tmp_path / "roots" / "a" / "x" / "defs.sf").write_text("V 1;")
    main = tmp_path / "main.sf"
    main.write_text('#include "/x/defs.sf"\nsfConfig extends { v V; }')
    monkeypatch.setenv("SDMESH_PATH", str(tmp_path / "roots" / "a"))
    assert resolve_file(main).to_json() == {"v": 1}
    monkeypatch.delenv("SDMESH_PATH")
    assert resolve_file(main, include_dirs=[tmp_path / "roots" / "a"]).to_json() == {"v": 1}


def test_smartfrog_class_path_names_resolve_to_the_library(resolve: Resolve) -> None:
    result = resolve(
        '#include "/org/smartfrog/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/components.sf"\n'
        "sfConfig extends Compound { s extends Sequence { } r extends Retry { retry 3; } }"
    )
    tree = result.to_json()
    assert tree["s"]["sfClass"] == "org.smartfrog.sfcore.workflow.combinators.Sequence"  # type: ignore[index]
    assert tree["r"]["retry"] == 3  # type: ignore[index]


def test_missing_include_lists_where_it_looked(errors: Errors) -> None:
    (message,) = errors('#include "nope.sf"\nsfConfig extends { }')
    assert message.startswith('1:1: include file "nope.sf" not found (searched ')


def test_optional_include_may_be_missing(resolve: Resolve) -> None:
    assert resolve('#include? "nope.sf"\nsfConfig extends { }').to_json() == {}


def test_include_cycle_is_an_error(errors: Errors) -> None:
    found = errors(
        '#include "a.sf"\nsfConfig extends { }',
        **{"a.sf": '#include "b.sf"', "b.sf": '#include "a.sf"'},
    )
    assert found == ["1:1: include cycle: main.sf -> a.sf -> b.sf -> a.sf"]


def test_errors_in_included_files_name_that_file_and_the_include_site(
    resolve: Resolve, tmp_path: Path
) -> None:
    from sdmesh.language import DescriptorError

    with pytest.raises(DescriptorError) as info:
        resolve('#include "bad.sf"\nsfConfig extends { }', **{"bad.sf": "x 1 2;"})
    (diagnostic,) = info.value.errors
    assert diagnostic.location is not None
    assert diagnostic.location.source.name == str(tmp_path / "bad.sf")
    assert diagnostic.notes[0][0] == 'in file included from "bad.sf" here'


def test_include_of_a_url_is_refused(errors: Errors) -> None:
    assert errors('#include "http://example.org/x.sf"\nsfConfig extends { }') == [
        "1:1: #include of a URL is not supported; use a file path"
    ]
