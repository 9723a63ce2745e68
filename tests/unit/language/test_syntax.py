"""Parsing: every construct of the SmartDomains-era and later grammars, and syntax errors."""

from __future__ import annotations

from collections.abc import Callable

from sdmesh.language import ResolvedDescriptor

Resolve = Callable[..., ResolvedDescriptor]
Errors = Callable[..., list[str]]


def test_semicolons_required_2006_style_and_optional_later_style(resolve: Resolve) -> None:
    old = resolve('sfConfig extends { a 1; b "x"; c extends; d extends NULL; }')
    new = resolve('sfConfig extends { a 1 b "x" c extends {} d extends NULL }')
    assert old.to_json() == new.to_json() == {"a": 1, "b": "x", "c": {}, "d": {}}


def test_null_and_presence_flag(resolve: Resolve) -> None:
    assert resolve("sfConfig extends { a NULL; flag; }").to_json() == {"a": None, "flag": None}


def test_multiple_prototypes_merge_left_to_right_keeping_positions(resolve: Resolve) -> None:
    result = resolve(
        """
        A extends { x 1; y 2; }
        B extends { y 20; z 30; }
        sfConfig extends { c extends A, B, { w 0; x 10; } }
        """
    )
    assert result.to_json() == {"c": {"x": 10, "y": 20, "z": 30, "w": 0}}


def test_body_after_prototype_without_comma(resolve: Resolve) -> None:
    result = resolve("A extends { x 1; } sfConfig extends { c extends A { y 2; } }")
    assert result.to_json() == {"c": {"x": 1, "y": 2}}


def test_data_and_lazy_descriptions_are_not_children(resolve: Resolve) -> None:
    result = resolve(
        "sfConfig extends { a extends DATA { x 1; } b extends LAZY { } c extends { } }"
    )
    assert [name for name, _ in result.root.children()] == ["c"]
    assert not result.root.attrs["a"].value.eager  # type: ignore[attr-defined]


def test_anonymous_attributes_get_stable_names(resolve: Resolve) -> None:
    text = 'sfConfig extends { -- "a"; -- extends { } }'
    first, second = resolve(text).to_json(), resolve(text).to_json()
    assert first == second and list(first) == ["unique1", "unique2"]  # type: ignore[arg-type]


def test_dash_from_typeset_slides_reads_as_anonymous_with_warning(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { - extends { a 1; } \u2013 extends { b 2; } }")
    assert list(result.to_json().values()) == [{"a": 1}, {"b": 2}]  # type: ignore[union-attr]
    assert [w.message.split(" ")[0] for w in result.warnings] == ["'-'", "'\u2013'"]


def test_tags_are_attached_and_sftemp_is_dropped(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { [sfTemp] t 1; [a, b] k 2; [c d] l t; }")
    assert result.to_json() == {"k": 2, "l": 1}
    assert result.root.attrs["k"].tags == {"a", "b"}


def test_quoted_attribute_names(resolve: Resolve) -> None:
    assert resolve('sfConfig extends { "my name" 1; }').to_json() == {"my name": 1}


def test_vectors(resolve: Resolve) -> None:
    result = resolve(
        'sfConfig extends { p [|1, "a", [|true|], NULL|]; f [ATTRIB p, (1 + 1)]; e []; }'
    )
    assert result.to_json() == {
        "p": [1, "a", [True], None],
        "f": [[1, "a", [True], None], 2],
        "e": [],
    }


def test_reference_forms(resolve: Resolve) -> None:
    result = resolve(
        """
        top 7;
        sfConfig extends {
            a 1;
            inner extends {
                b ATTRIB a;
                c PARENT:a;
                d ROOT:top;
                e THIS:f;
                f HERE b;
                g sfConfig:a;
                h inner:b;
            }
        }
        """
    )
    assert result.to_json()["inner"] == {  # type: ignore[index]
        "b": 1,
        "c": 1,
        "d": 7,
        "e": 1,
        "f": 1,
        "g": 1,
        "h": 1,
    }


def test_operators_and_if(resolve: Resolve) -> None:
    result = resolve(
        """
        sfConfig extends {
            n 6;
            sum (n + 1 + 2); diff (n - 10); prod (n * 2); quot (7 / 2); mod (7 % 4);
            dbl (n / 4.0);
            cat ("vm-" ++ n); app ([|1|] <> [|2, 3|]);
            cmp (n > 5); eq (n == 6); ne ("a" != "a"); neg (! true); both (true && (n < 3));
            pick IF (n >= 6) THEN "big" ELSE "small" FI;
        }
        """
    )
    assert result.to_json() == {
        "n": 6,
        "sum": 9,
        "diff": -4,
        "prod": 12,
        "quot": 3,
        "mod": 3,
        "dbl": 1.5,
        "cat": "vm-6",
        "app": [1, 2, 3],
        "cmp": True,
        "eq": True,
        "ne": False,
        "neg": False,
        "both": False,
        "pick": "big",
    }


def test_template_functions(resolve: Resolve) -> None:
    result = resolve(
        """
        #include "org/smartfrog/functions.sf"
        sfConfig extends {
            name "vm";
            full extends concat { -- "host-"; -- name; -- 3; }
            fmt extends formatString { format "$1 has $2 cpus"; s1 name; s2 4; }
            total extends sum { a 1; b 2; }
        }
        """
    )
    assert result.to_json() == {
        "name": "vm",
        "full": "host-vm3",
        "fmt": "vm has 4 cpus",
        "total": 3,
    }


def test_operator_mixing_needs_parentheses(errors: Errors) -> None:
    assert errors("sfConfig extends { x (1 + 2 * 3); }") == [
        "1:29: operators have no precedence in SmartFrog: '+' and '*' need their own "
        "parentheses, e.g. ((a + b) * c)"
    ]


def test_negative_number_token_like_smartfrog(errors: Errors) -> None:
    assert errors("sfConfig extends { x (5 -3); }")[0].startswith("1:25: expected an operator")


def test_every_syntax_error_is_reported(errors: Errors) -> None:
    found = errors(
        """sfConfig extends {
    a 1 2;
    b extends 5;
    ok 1;
    c [| ATTRIB a |];
    TBD 3;
}
}"""
    )
    assert found == [
        "2:9: expected an attribute name, found number 2",
        "3:15: expected a prototype name, '{' or NULL after 'extends', found number 5",
        "5:10: [| |] vectors hold only literals, found keyword 'ATTRIB'; use [ ] for references",
        "6:5: 'TBD' is a reserved word and cannot name an attribute",
        "8:1: unexpected '}' (no '{' to close)",
    ]


def test_missing_closing_brace_points_at_opening(errors: Errors) -> None:
    assert errors("sfConfig extends {\n a 1;\n") == ["3:1: missing '}' before end of file"]


def test_duplicate_attribute_in_one_body_warns(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { a 1; b 2; a 3; }")
    assert result.to_json() == {"a": 3, "b": 2}
    assert result.warnings[0].message == "attribute 'a' is defined twice here; the later value wins"
