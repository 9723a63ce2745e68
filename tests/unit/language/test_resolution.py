"""The phases: type, place, sfConfig, link — and their errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sdmesh.language import ResolvedDescriptor
from sdmesh.language.values import ComponentDescription, Reference

Resolve = Callable[..., ResolvedDescriptor]
Errors = Callable[..., list[str]]


def test_overrides_keep_first_position(resolve: Resolve) -> None:
    result = resolve("P extends { a 1; b 2; c 3; } sfConfig extends { x extends P { b 20; d 4; } }")
    assert list(result.to_json()["x"].items()) == [("a", 1), ("b", 20), ("c", 3), ("d", 4)]  # type: ignore[index]


def test_lazy_link_in_prototype_resolves_where_copied(resolve: Resolve) -> None:
    """The tutorial's DefaultXenDomain: its LAZY link is copied, not resolved in place."""
    result = resolve(
        """
        T extends { shell LAZY ATTRIB myShell; size (base * 2); }
        sfConfig extends { myShell extends { } base 1; a extends T; b extends T { base 5; } }
        """
    )
    tree = result.to_json()
    assert tree["a"] == {"shell": {"$lazy": "ATTRIB myShell"}, "size": 2}  # type: ignore[index]
    assert tree["b"] == {"shell": {"$lazy": "ATTRIB myShell"}, "size": 10, "base": 5}  # type: ignore[index]


def test_prototype_copies_are_independent(resolve: Resolve) -> None:
    result = resolve(
        "T extends { inner extends { v 1; } } sfConfig extends { a extends T; b extends T { inner:v 2; } }"
    )
    assert result.to_json() == {"a": {"inner": {"v": 1}}, "b": {"inner": {"v": 2}}}


def test_tags_union_and_final(errors: Errors, resolve: Resolve) -> None:
    result = resolve("P extends { [t1] a 1; } sfConfig extends { x extends P { [t2] a 2; } }")
    assert result.root.attrs["x"].value.attrs["a"].tags == {"t1", "t2"}  # type: ignore[attr-defined]
    assert errors("P extends { [sfFinal] a 1; } sfConfig extends { x extends P { a 2; } }") == [
        "1:63: cannot override final attribute 'a'"
    ]


def test_cyclic_extends_is_an_error(errors: Errors) -> None:
    found = errors("A extends B; B extends A; sfConfig extends { x extends A; }")
    assert len(found) == 1 and "cyclic extends" in found[0]
    assert "cyclic extends" in errors("sfConfig extends { a extends { b extends sfConfig; } }")[0]


def test_extending_a_non_description(errors: Errors) -> None:
    assert errors("V 3; sfConfig extends { x extends V; }") == [
        "1:35: cannot extend V: it is a Integer, not a component description"
    ]


def test_placement_into_nested_and_later_components(resolve: Resolve) -> None:
    result = resolve(
        """
        sfConfig extends {
            a:b:c 3;
            a extends { b extends { d 4; } }
            a:b:d 40;
        }
        """
    )
    assert result.to_json() == {"a": {"b": {"d": 40, "c": 3}}}


def test_placement_into_prototype_does_not_affect_earlier_extenders(resolve: Resolve) -> None:
    result = resolve("P extends { a 1; } sfConfig extends { x extends P; } P:b 2;")
    assert result.to_json() == {"x": {"a": 1}}


def test_unplaceable_placement(errors: Errors) -> None:
    assert errors("sfConfig extends { a 1; a:b 2; nope:x 3; }") == [
        "1:25: cannot place 'a:b': 'a' is a Integer, not a component",
        "1:32: cannot place 'nope:x': 'nope' does not exist here",
    ]


def test_eager_link_shares_computed_value_and_copies_descriptions(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { a (1 + 1); b a; c extends { v 1; } d c; }")
    assert result.to_json() == {"a": 2, "b": 2, "c": {"v": 1}, "d": {"v": 1}}
    root = result.root
    assert root.attrs["c"].value is not root.attrs["d"].value


def test_link_through_lazy_becomes_lazy(resolve: Resolve) -> None:
    result = resolve('sfConfig extends { s extends { } a LAZY ATTRIB s; b a; c (a ++ "x"); }')
    tree = result.to_json()
    assert tree["b"] == {"$lazy": "a"}  # type: ignore[index]
    value = result.root.attrs["c"].value
    assert getattr(value, "lazy", False)


def test_links_resolve_where_placed(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { v 1; x:w v; x extends { v 2; } }")
    assert result.to_json() == {"v": 1, "x": {"v": 2, "w": 2}}


def test_only_sfconfig_is_linked(resolve: Resolve) -> None:
    assert resolve("Proto extends { x TBD; y nothing; } sfConfig extends { }").to_json() == {}


def test_tbd_in_sfconfig_is_located_at_the_component(errors: Errors) -> None:
    found = errors("P extends { size TBD; }\nsfConfig extends {\n  disk extends P;\n}")
    assert found == ["3:3: 'size' of sfConfig:disk is TBD: it must be given a value"]


def test_tbd_inside_data_description_is_an_error_too(errors: Errors) -> None:
    assert len(errors("sfConfig extends { d extends DATA { x TBD; } }")) == 1


def test_cyclic_reference(errors: Errors) -> None:
    assert errors("sfConfig extends { a b; b c; c a; }") == [
        "1:20: cyclic reference: a -> b -> c -> a"
    ]


def test_long_reference_chain_is_an_error_not_a_crash(errors: Errors) -> None:
    chain = " ".join(f"a{i} a{i + 1};" for i in range(1000))
    found = errors(f"sfConfig extends {{ {chain} a1000 1; }}")
    assert any("longer than" in e for e in found)


def test_long_extends_chain_is_an_error_not_a_crash(errors: Errors) -> None:
    chain = "\n".join(f"P{i} extends P{i + 1};" for i in range(1000))
    found = errors(f"{chain}\nP1000 extends {{ }}\nsfConfig extends {{ x extends P0; }}")
    assert any("longer than" in e for e in found)


def test_optional_references(resolve: Resolve) -> None:
    result = resolve(
        "sfConfig extends { a OPTIONAL(5) nope; b OPTIONAL nope; c OPTIONAL(5) d; d 1; }"
    )
    assert result.to_json() == {"a": 5, "b": None, "c": 1, "d": 1}


def test_properties_and_environment(resolve: Resolve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDMESH_TEST_VAR", "42")
    result = resolve(
        "sfConfig extends { e ENVPROPERTY SDMESH_TEST_VAR; i IENVPROPERTY SDMESH_TEST_VAR; "
        "s PROPERTY file.separator; }"
    )
    assert result.to_json() == {"e": "42", "i": 42, "s": "/"}


def test_unset_environment_variable(errors: Errors) -> None:
    assert errors("sfConfig extends { e ENVPROPERTY SDMESH_SURELY_UNSET_VAR; }") == [
        "1:22: cannot resolve ENVPROPERTY SDMESH_SURELY_UNSET_VAR: environment variable "
        "'SDMESH_SURELY_UNSET_VAR' is not set"
    ]


def test_host_references_must_be_lazy(errors: Errors, resolve: Resolve) -> None:
    assert "resolve only at run time" in errors('sfConfig extends { a HOST "h":app; }')[0]
    assert resolve('sfConfig extends { a LAZY HOST "h":app; }').to_json() == {
        "a": {"$lazy": "HOST h:app"}
    }


def test_data_reference_is_kept(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { a DATA b:c; }")
    value = result.root.attrs["a"].value
    assert isinstance(value, Reference) and value.data and value.canonical() == "b:c"


def test_missing_or_bad_sfconfig(errors: Errors) -> None:
    assert errors("a 1;")[0].startswith("1:1: no sfConfig")
    assert errors("sfConfig 3;") == [
        "1:1: sfConfig must be a component description (sfConfig extends ... { })"
    ]


def test_function_errors_are_located(errors: Errors) -> None:
    assert errors("sfConfig extends { a (1 / 0); }") == ["1:25: division by zero"]


def test_run_time_root_is_sfconfig(resolve: Resolve) -> None:
    root = resolve("sfConfig extends { a extends { } }").root
    assert root.parent is None and isinstance(root.attrs["a"].value, ComponentDescription)
    assert root.attrs["a"].value.parent is root  # type: ignore[union-attr]


def test_text_form_parses_back_to_the_same_tree(resolve: Resolve) -> None:
    first = resolve(
        '#include "sdmesh/components.sf"\n'
        "sfConfig extends Compound { s extends BashShell; v extends XenDomain { shell LAZY ATTRIB s; "
        'kernel "/k"; x [ATTRIB kernel, "a\\tb"]; f 1.5f; l 3L; } }'
    )
    again = resolve(first.to_sf())
    assert again.to_json() == first.to_json() and again.digest() == first.digest()


def test_links_to_an_enclosing_description_are_errors_not_hangs(errors: Errors) -> None:
    for text in (
        "sfConfig extends { a THIS; }",
        "sfConfig extends { a PARENT; }",
        "sfConfig extends { x extends { a OPTIONAL PARENT; } }",
        "sfConfig extends { x extends { y extends { a ATTRIB x; } } }",
    ):
        (message,) = errors(text)
        assert "links to a description that contains it" in message, text


def test_lazy_links_to_enclosing_descriptions_are_fine(resolve: Resolve) -> None:
    assert resolve("sfConfig extends { a LAZY PARENT; }").to_json() == {"a": {"$lazy": "PARENT"}}


def test_sfoverride_must_override_something(errors: Errors, resolve: Resolve) -> None:
    assert resolve(
        "P extends { x 1; } sfConfig extends { a extends P { [sfOverride] x 2; } }"
    ).to_json() == {"a": {"x": 2}}
    (message,) = errors("P extends { x 1; } sfConfig extends { a extends P { [sfOverride] y 2; } }")
    assert "overrides nothing" in message


def test_sflocal_attributes_are_not_reachable_from_outside(
    errors: Errors, resolve: Resolve
) -> None:
    assert resolve("sfConfig extends { a extends { [sfLocal] x 1; y x; } }").to_json() == {
        "a": {"x": 1, "y": 1}
    }
    (message,) = errors("sfConfig extends { a extends { [sfLocal] x 1; } z a:x; }")
    assert "is [sfLocal]" in message
