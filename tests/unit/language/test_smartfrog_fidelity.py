"""SmartFrog's semantics where sdmesh used to differ (issue 13), one minimal descriptor each.

The descriptors are ours; what they check is how SmartFrog's phases (type, place, function,
sfConfig, link) treat them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdmesh.language import ResolvedDescriptor, resolve_file
from sdmesh.language.loader import Loader
from sdmesh.language.source import Reporter

Resolve = Callable[..., ResolvedDescriptor]
Errors = Callable[..., list[str]]

#: A schema and assertions written the way SmartFrog's predicates.sf writes them: the
#: function phase's action names what the description is; there is no sfFunctionClass.
PREDICATES = """
Schema extends { phase.function "org.example.ConstructSchema"; }
Assertions extends { phase.function "org.example.ConstructAssertions"; }
Element extends { phase.function "org.example.ConstructFunction"; sfFunctionClass "x"; name TBD; }
Integer extends Element { class "java.lang.Integer"; optional false; binding "anyBinding"; }
OptionalString extends Element { class "java.lang.String"; optional true; }
"""


# -- 1. phase.function names schemas and assertions too ---------------------------------
def test_a_schema_built_by_the_function_phase_needs_no_function_class(resolve: Resolve) -> None:
    text = PREDICATES + (
        "PortSchema extends Schema { port extends Integer; label extends OptionalString; }\n"
        "sfConfig extends { server extends { schema extends PortSchema; port 80; } }"
    )
    assert resolve(text).to_json() == {"server": {"port": 80}}


def test_a_schema_built_by_the_function_phase_is_checked(errors: Errors) -> None:
    text = PREDICATES + (
        "PortSchema extends Schema { port extends Integer; }\n"
        'sfConfig extends { server extends { schema extends PortSchema; port "eighty"; } }'
    )
    (message,) = errors(text)
    assert "'port' of sfConfig:server must be an Integer" in message


def test_a_missing_compulsory_attribute_is_a_schema_error(errors: Errors) -> None:
    text = PREDICATES + (
        "PortSchema extends Schema { port extends Integer; }\n"
        "sfConfig extends { server extends { schema extends PortSchema; } }"
    )
    (message,) = errors(text)
    assert "needs attribute 'port'" in message


def test_assertions_must_hold(resolve: Resolve, errors: Errors) -> None:
    holds = PREDICATES + "sfConfig extends { n 3; check extends Assertions { big (n > 2); } }"
    assert resolve(holds).to_json() == {"n": 3, "check": True}
    fails = PREDICATES + "sfConfig extends { n 1; check extends Assertions { big (n > 2); } }"
    (message,) = errors(fails)
    assert "assertion failed" in message and "'big' is false" in message
    (message,) = errors(PREDICATES + "sfConfig extends { check extends Assertions { n 3; } }")
    assert "'n' is Integer 3, not a Boolean" in message


# -- 2. sfConfig given as a link ---------------------------------------------------------
def test_sfconfig_given_as_a_link_resolves_through_it(resolve: Resolve) -> None:
    text = 'Base extends { size 2; }\nApp extends Base { name "app"; }\nsfConfig App;'
    assert resolve(text).to_json() == {"size": 2, "name": "app"}


def test_sfconfig_linking_to_a_value_is_refused(errors: Errors) -> None:
    (message,) = errors('value "text";\nsfConfig value;')
    assert "sfConfig must be a component description" in message


# -- 3. placement through a link ---------------------------------------------------------
def test_placement_follows_a_link_into_the_description_it_names(resolve: Resolve) -> None:
    text = (
        "Template extends { service extends { port 1; } }\n"
        "sfConfig extends {\n"
        "  action Template;\n"
        "  action:service:port 8080;\n"
        "}"
    )
    assert resolve(text).to_json() == {"action": {"service": {"port": 8080}}}


def test_placement_into_a_value_is_still_refused(errors: Errors) -> None:
    (message,) = errors('sfConfig extends { a "text"; a:b 1; }')
    assert "cannot place 'a:b'" in message


# -- 4. the library covers SmartFrog 3.10 -----------------------------------------------
def test_the_library_has_the_3_10_workflow_names(resolve: Resolve) -> None:
    text = """
#include "org/smartfrog/components.sf"
#include "org/smartfrog/sfcore/workflow/components.sf"
sfConfig extends Compound {
    work extends WorkflowPrim { sfClass "x"; }
    idle extends DoNothing;
    parts extends Container { one extends Run; two extends FireBreak; }
    rest extends Sequence { a extends Finally; b extends Retract; c extends RandomSequence; }
    more extends Parallel { d extends Deployer; e extends DetachingCompound; f extends OnEvent; }
    events extends EventCompound { g extends EventSend; h extends EventCounter; i extends EventQueue; }
}
"""
    tree = resolve(text).to_json()
    assert isinstance(tree, dict)
    assert set(tree) >= {"work", "idle", "parts", "rest", "more", "events"}


def test_the_library_has_the_schema_bases_component_libraries_extend(resolve: Resolve) -> None:
    text = """
#include "org/smartfrog/components.sf"
MySchema extends WorkflowPrimSchema { size extends OptionalInteger; }
MyCompoundSchema extends CompoundSchema { }
sfConfig extends Compound { thing extends WorkflowPrim { sfClass "x"; s extends MySchema; size 3; } }
"""
    assert resolve(text).to_json() == {
        "sfClass": "org.smartfrog.sfcore.compound.CompoundImpl",
        "sfSyncTerminate": False,
        "thing": {"sfClass": "x", "size": 3},
    }


def test_the_library_functions_of_3_10(resolve: Resolve) -> None:
    text = """
#include "org/smartfrog/functions.sf"
counter extends next { base 5; }
sfConfig extends {
    first extends counter;
    second extends counter;
    die extends random { min 1; max 6; integer true; }
    today extends date;
    answer extends userinput { prompt "?"; default "yes"; }
    ge extends GE { left 3; right 3; }
    lt extends LT { left 3; right 3; }
    ne extends NE { left 1; right 2; }
    target 42;
    found extends ref { reference "target"; }
}
"""
    tree = resolve(text).to_json()
    assert isinstance(tree, dict)
    assert tree["second"] == tree["first"] + 1
    assert 1 <= tree["die"] <= 6
    assert str(time.gmtime().tm_year) in tree["today"]
    assert (tree["answer"], tree["ge"], tree["lt"], tree["ne"]) == ("yes", True, False, True)
    assert tree["found"] == 42


def test_the_shell_library_brings_the_core_library_and_windows_shells(resolve: Resolve) -> None:
    text = (
        '#include "org/smartfrog/services/shellscript/components.sf"\n'
        "sfConfig extends Compound { shell extends WinXPShell; }"
    )
    tree = resolve(text).to_json()
    assert isinstance(tree, dict)
    assert tree["shell"]["exec"]["cmd"] == ["cmd"]


# -- 5. a function as sfConfig -----------------------------------------------------------
def test_a_function_as_sfconfig_is_rejected(errors: Errors) -> None:
    text = '#include "org/smartfrog/functions.sf"\nsfConfig extends concat { a "x"; b "y"; }'
    (message,) = errors(text)
    assert message.endswith(
        "sfConfig is a function (Concatenate): the function phase turns it into its value, "
        "so there is no component description to deploy"
    )


# -- 6. CONSTANT -------------------------------------------------------------------------
def test_a_constant_stays_symbolic(resolve: Resolve) -> None:
    result = resolve("sfConfig extends { limit CONSTANT org.example.Limits.MAX; }")
    assert "CONSTANT org.example.Limits.MAX" in result.to_sf()


# -- 7. include lookup is linear in the roots --------------------------------------------
def test_include_lookup_does_not_search_every_root_for_every_include(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = [tmp_path / f"root{i}" for i in range(60)]
    for root in roots:
        (root / "org").mkdir(parents=True)
    (roots[-1] / "org" / "defs.sf").write_text("X 1;")
    includes = 300
    main = tmp_path / "main.sf"
    main.write_text('#include "org/defs.sf"\n' * includes + "sfConfig extends { x X; }")
    checks = 0
    original = Path.is_file

    def counting(self: Path) -> bool:
        nonlocal checks
        checks += 1
        return original(self)

    monkeypatch.setattr(Path, "is_file", counting)
    assert resolve_file(main, roots).to_json() == {"x": 1}
    # including directory and working directory per include, the roots once per name
    assert checks < includes * 3 + len(roots) + 10


def test_a_missing_include_still_names_every_place_searched(tmp_path: Path) -> None:
    loader = Loader(Reporter(), [tmp_path / "a", tmp_path / "b"], tmp_path)
    found, searched = loader.find_include("org/none.sf", tmp_path)
    assert found is None
    assert tmp_path / "a" in searched and tmp_path / "b" in searched


def test_a_compulsory_attribute_that_cannot_resolve_is_reported_by_its_schema(
    errors: Errors,
) -> None:
    # SmartFrog checks a schema where the schema attribute sits, before the component's own
    # attributes are linked: the unresolvable value is a missing attribute.
    text = PREDICATES + (
        "HostSchema extends Schema { host extends Integer; }\n"
        "sfConfig extends { conn extends { schema extends HostSchema; host PARENT:ATTRIB gone; } }"
    )
    (message,) = errors(text)
    assert "sfConfig:conn needs attribute 'host': cannot resolve PARENT:ATTRIB gone" in message


def test_names_kept_for_old_descriptors_are_not_described_as_runnable(resolve: Resolve) -> None:
    from sdmesh.language import catalog

    described = {doc.name for doc in catalog.components()}
    assert "Sequence" in described and "DoNothing" not in described
    text = (
        '#include "org/smartfrog/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/components.sf"\n'
        "sfConfig extends Compound { idle extends DoNothing; }"
    )
    tree = resolve(text).to_json()
    assert isinstance(tree, dict) and "sdmeshRuns" not in tree["idle"]
