"""Component schemas: required attributes, types, bindings, ranges, choices, typos."""

from __future__ import annotations

from collections.abc import Callable

from sdmesh.language import ResolvedDescriptor

Resolve = Callable[..., ResolvedDescriptor]
Errors = Callable[..., list[str]]

LIB = '#include "sdmesh/components.sf"\n'


def test_valid_vm_and_defaults(resolve: Resolve) -> None:
    tree = resolve(
        LIB + "sfConfig extends Compound { vm extends KvmDomain { memory 256; } }"
    ).to_json()
    vm = tree["vm"]  # type: ignore[index]
    assert (vm["memory"], vm["vcpus"], vm["flavour"], vm["restart"]) == (256, 1, "kvm", "never")
    assert "vmSchema" not in vm and "sfPrimSchema" not in vm


def test_missing_required_attribute_points_at_component_and_schema(errors: Errors) -> None:
    assert errors(LIB + "sfConfig extends Compound {\n  d extends Qcow2OverlayBackend { }\n}") == [
        "3:3: sfConfig:d (Qcow2OverlayBackend) needs attribute 'baseImage' (the image the guest "
        "disk is made from: a file, or for LVM a logical volume path)"
    ]


def test_wrong_type_range_and_choice(errors: Errors) -> None:
    found = errors(
        LIB
        + 'sfConfig extends Compound { vm extends XenDomain { memory "lots"; vcpus 0; flavour "lxc"; } }'
    )
    assert [e.split(": ", 1)[1] for e in found] == [
        "'memory' of sfConfig:vm (XenDomain) must be an Integer (guest memory in MiB), not String \"lots\"",
        "'vcpus' of sfConfig:vm (XenDomain) is 0; the minimum is 1",
        '\'flavour\' of sfConfig:vm (XenDomain) is "lxc"; choose one of "kvm", "xen"',
    ]


def test_link_attributes_must_be_lazy(errors: Errors) -> None:
    found = errors(LIB + 'sfConfig extends Compound { vm extends VM { storageBackend "disk0"; } }')
    assert "'storageBackend' of sfConfig:vm (VM) must be a LAZY reference" in found[0]


def test_typo_gets_did_you_mean(resolve: Resolve) -> None:
    result = resolve(LIB + "sfConfig extends Compound { vm extends VM { memroy 512; } }")
    assert [w.message for w in result.warnings] == [
        "sfConfig:vm (VM) has no attribute 'memroy'; did you mean 'memory'?"
    ]


def test_smartfrog_style_nested_schema(errors: Errors, resolve: Resolve) -> None:
    defs = '#include "org/smartfrog/predicates.sf"\n'
    good = defs + "sfConfig extends { s extends Schema { port extends Integer; } port 80; }"
    assert resolve(good).to_json() == {"port": 80}
    bad = defs + 'sfConfig extends { s extends Schema { port extends Integer; } port "80"; }'
    assert errors(bad)[0].endswith("'port' of sfConfig must be an Integer, not String \"80\"")


def test_lazy_values_are_checked_at_run_time_not_now(resolve: Resolve) -> None:
    result = resolve(
        LIB + "sfConfig extends Compound { m 64; vm extends VM { memory LAZY ATTRIB m; } }"
    )
    assert result.to_json()["vm"]["memory"] == {"$lazy": "ATTRIB m"}  # type: ignore[index]
