"""Pool templates (seed 001: hide descriptions, fill up missing fields): parsing, filling,
rendering, and every built-in template rendering a descriptor the resolver and the pool
layout accept, with the components the tutorial uses."""

from __future__ import annotations

import pytest

from sdmesh.agent.dashboard import load_templates, templates_dir
from sdmesh.language import resolve_text
from sdmesh.pools.layout import layout
from sdmesh.pools.submission import build_spec
from sdmesh.pools.templates import (
    POOL_FIELD_NAME,
    Template,
    TemplateError,
    TemplateFormatError,
    fill,
    parse_template,
    render,
)

SMALL = """\
// A comment that stays.
// @template {"title": "Small", "description": "a small pool"}
// @field {"name": "count", "type": "int", "default": 2, "min": 1, "max": 5, "help": "VMs"}
// @field {"name": "memory", "type": "int", "default": 128, "min": 16, "help": "MiB"}
// @field {"name": "image", "type": "string", "default": "/img/a.qcow2", "help": "base image"}
// @field {"name": "flavour", "type": "choice", "default": "kvm", "choices": ["kvm", "xen"], "help": "kind"}
// @field {"name": "hosts", "type": "list", "default": [], "help": "hosts"}
// @field {"name": "sync", "type": "bool", "default": true, "help": "sync terminate"}
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {
    sfSyncTerminate {{sync}};
    s extends Scheduler { hosts {{hosts}}; }
    {{#repeat count}}
    vm{{index}} extends VirtualMachine { memory {{memory}}; flavour {{flavour}}; }
    {{/repeat}}
    label {{image}};
}
"""


@pytest.fixture
def small() -> Template:
    return parse_template("small", SMALL)


def test_fields_are_listed_with_the_pool_name_first(small: Template) -> None:
    listed = small.to_json()
    assert listed["title"] == "Small" and listed["description"] == "a small pool"
    fields = listed["fields"]
    assert isinstance(fields, list)
    assert [f["name"] for f in fields] == [
        POOL_FIELD_NAME,
        "count",
        "memory",
        "image",
        "flavour",
        "hosts",
        "sync",
    ]
    assert fields[1] == {
        "name": "count",
        "type": "int",
        "default": 2,
        "help": "VMs",
        "label": "count",
        "min": 1,
        "max": 5,
    }
    assert fields[4]["choices"] == ["kvm", "xen"]
    assert fields[0]["pattern"]  # the pool name's form, for the page's input


def test_missing_fields_take_their_defaults(small: Template) -> None:
    values = fill(small, {"memory": "512", "image": ""})  # a form sends strings; "" is unset
    assert values == {
        POOL_FIELD_NAME: "",
        "count": 2,
        "memory": 512,
        "image": "/img/a.qcow2",
        "flavour": "kvm",
        "hosts": [],
        "sync": True,
    }
    assert fill(small, None) == fill(small, {})


def test_render_substitutes_literals_and_repeats_blocks(small: Template) -> None:
    values = fill(
        small,
        {"count": 3, "image": 'a "quoted"\\path', "hosts": "n1, n2,", "sync": False},
    )
    text = render(small, values)
    assert "// A comment that stays." in text and "@field" not in text and "{{" not in text
    assert "sfSyncTerminate false;" in text
    assert 's extends Scheduler { hosts [|"n1", "n2"|]; }' in text
    assert 'label "a \\"quoted\\"\\\\path";' in text
    assert [line.strip() for line in text.splitlines() if "extends VirtualMachine" in line] == [
        f'vm{i} extends VirtualMachine {{ memory 128; flavour "kvm"; }}' for i in (1, 2, 3)
    ]
    # Block tags alone on their lines leave no blank lines behind.
    assert "\n\n" not in text
    resolved = resolve_text(text, "small.sf")
    assert resolved.to_json()["label"] == 'a "quoted"\\path'  # type: ignore[index]


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({"count": 0}, "count", "at least 1"),
        ({"count": 6}, "count", "at most 5"),
        ({"count": "three"}, "count", "whole number"),
        ({"count": True}, "count", "whole number"),
        ({"count": 2.5}, "count", "whole number"),
        ({"flavour": "vmware"}, "flavour", "one of kvm, xen"),
        ({"image": 5}, "image", "must be text"),
        ({"image": "a\nb"}, "image", "control characters"),
        ({"sync": "maybe"}, "sync", "true or false"),
        ({"hosts": {"a": 1}}, "hosts", "list"),
        ({"name": "Bad Name"}, POOL_FIELD_NAME, "expected form"),
        ({"colour": "red"}, "colour", "not a field of template small"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    small: Template, given: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        fill(small, given)
    assert list(caught.value.errors) == [field]
    assert says in caught.value.errors[field]
    assert f"field {field!r}" in str(caught.value)


def test_every_bad_field_is_reported_at_once(small: Template) -> None:
    with pytest.raises(TemplateError) as caught:
        fill(small, {"count": 0, "memory": 1, "flavour": "x"})
    assert set(caught.value.errors) == {"count", "memory", "flavour"}


def test_fields_must_be_an_object(small: Template) -> None:
    with pytest.raises(TemplateError) as caught:
        fill(small, ["count", 3])
    assert "fields" in caught.value.errors


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sfConfig extends Compound {}", "needs // @template"),
        ('// @template {"title": "t"\n', "not a JSON object"),
        (
            '// @template {"title": "t", "description": "d"}\nsfConfig extends Compound { a {{b}}; }',
            "not a field",
        ),
        (
            '// @template {"title": "t", "description": "d"}\nsfConfig extends Compound { a {{index}}; }',
            "not a field",  # index exists only inside a repeat
        ),
        (
            '// @template {"title": "t", "description": "d"}\nsfConfig extends Compound { a {{name}}; }',
            "not a field",  # the pool name is the request's, not the descriptor's
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "s", "type": "string", "default": "x", "help": "h"}\n'
            "{{#repeat s}}{{/repeat}}",
            "repeats one int field",
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "n", "type": "int", "default": 1, "help": "h"}\n'
            "{{#repeat n}}",
            "never ended",
        ),
        ('// @template {"title": "t", "description": "d"}\n{{/repeat}}', "no repeat to end"),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "n", "type": "int", "default": 0, "min": 1, "help": "h"}\n',
            "bad default",
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "n", "type": "float", "default": 0, "help": "h"}\n',
            "type must be one of",
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "name", "type": "int", "default": 0, "help": "h"}\n',
            "needs a new name",
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "c", "type": "choice", "default": "a", "help": "h"}\n',
            "needs choices",
        ),
        (
            '// @template {"title": "t", "description": "d"}\n'
            '// @field {"name": "n", "type": "int", "default": 1, "help": ""}\n',
            "needs a help text",
        ),
    ],
)
def test_broken_templates_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(TemplateFormatError, match=says):
        parse_template("broken", text)


# ------------------------------------------------------------------ built-in templates
BUILTIN = load_templates(templates_dir())


def test_the_tutorial_pools_are_built_in() -> None:
    assert {"virtual-pool", "sequential-pool", "scheduled-pool"} <= set(BUILTIN)
    for template in BUILTIN.values():
        names = {f.name for f in template.fields}
        assert {POOL_FIELD_NAME, "count", "memory", "vcpus"} <= names, template.name
        assert template.title and template.description
        assert all(f.help for f in template.fields)


def _extremes(template: Template) -> list[dict[str, object]]:
    """Defaults, every field at its minimum, and every field at its maximum."""
    low: dict[str, object] = {}
    high: dict[str, object] = {}
    for field in template.fields:
        if field.type == "int":
            low[field.name] = field.min
            high[field.name] = field.max if field.name != "count" else 8  # 8 shows the repeat
        elif field.type == "choice":
            low[field.name], high[field.name] = field.choices[0], field.choices[-1]
    return [{}, low, high]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_templates_render_valid_pools(name: str) -> None:
    template = BUILTIN[name]
    for given in _extremes(template):
        values = fill(template, given)
        text = render(template, values)
        resolved = resolve_text(text, f"{name}.sf")  # raises with located errors
        assert not resolved.warnings, [d.format() for d in resolved.warnings]
        cut = layout(resolved.root)
        assert len(cut.units) == values["count"]  # one unit per VM
        demands = cut.demands()
        assert {d.memory_mib for d in demands} == {values["memory"]}
        assert {d.vcpus for d in demands} == {values["vcpus"]}
        spec = build_spec({"descriptor": text, "name": "p1"})  # what the API does with it
        assert spec.pool == "p1"


def test_the_virtual_pool_is_the_tutorial_asynchronous_pool() -> None:
    template = BUILTIN["virtual-pool"]
    text = render(template, fill(template, {"count": 2, "image": "/img/base.qcow2"}))
    kinds = build_spec({"descriptor": text, "name": "v"}).kinds
    assert kinds["sfConfig:pool"] == "Parallel"
    assert kinds["sfConfig:pool:smartDomain2:disk"] == "Qcow2OverlayBackend"
    assert kinds["sfConfig:pool:smartDomain2:vm"] == "VirtualMachine"
    tree = resolve_text(text, "v.sf").to_json()
    assert tree["pool"]["asynchCreateChild"] is True  # type: ignore[index]
    assert tree["pool"]["smartDomain1"]["disk"]["baseImage"] == "/img/base.qcow2"  # type: ignore[index]


def test_the_scheduled_pool_passes_hosts_and_policy() -> None:
    template = BUILTIN["scheduled-pool"]
    text = render(template, fill(template, {"hosts": "n1,n2", "policy": "pack"}))
    resolved = resolve_text(text, "s.sf")
    scheduler = resolved.to_json()["simpleScheduler"]  # type: ignore[index]
    assert scheduler["hosts"] == ["n1", "n2"] and scheduler["policy"] == "pack"
    # Each VM is a unit with its disk, and the Schedulee's scheduler still places it.
    cut = layout(resolved.root)
    assert sorted(cut.units) == [f"sfConfig:VMs2Dispatch:worker{i}:vm" for i in (1, 2, 3)]
    assert {(d.hosts, d.policy) for d in cut.demands()} == {(("n1", "n2"), "pack")}
