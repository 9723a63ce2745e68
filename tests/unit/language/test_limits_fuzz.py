"""Issue 11.5, generalised: short descriptors that combine values (``++``, ``*``, ``+``,
``<>``, vectors of references), each line using earlier ones, always end quickly, either
resolved or refused with located errors, and never print to more than the tree bound."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmesh.language import DescriptorError, resolve_text
from sdmesh.language.limits import DEFAULT_LIMITS
from sdmesh.language.policy import agent_policy

HEAD = '#include "/org/smartfrog/components.sf"\nsfConfig extends Compound {\n'
LITERALS = ['"xxxxxxxxxxxxxxxx"', "12345", "[|1, 2, 3|]", "9223372036854775807L"]


@st.composite
def descriptors(draw: st.DrawFn) -> str:
    lines = []
    count = draw(st.integers(2, 40))
    for index in range(count):
        if index < 2:
            lines.append(f"  a{index} {draw(st.sampled_from(LITERALS))};")
            continue
        names = st.integers(0, index - 1).map(lambda i: f"a{i}")
        shape = draw(st.sampled_from(["++", "*", "+", "<>", "vector", "literal"]))
        if shape == "literal":
            expression = draw(st.sampled_from(LITERALS))
        elif shape == "vector":
            items = draw(st.lists(names, min_size=1, max_size=12))
            expression = "[" + ", ".join(items) + "]"
        else:
            operands = draw(st.lists(names, min_size=2, max_size=4))
            expression = "(" + f" {shape} ".join(operands) + ")"
        lines.append(f"  a{index} {expression};")
    return HEAD + "\n".join(lines) + "\n}\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptors())
def test_combined_values_end_quickly_resolved_or_refused(text: str) -> None:
    started = time.perf_counter()
    try:
        resolved = resolve_text(text, "<pool p>", policy=agent_policy())
    except DescriptorError as error:
        assert error.errors and all(d.location is not None for d in error.errors)
    else:
        assert len(resolved.to_sf()) < 4 * DEFAULT_LIMITS.max_total
    assert time.perf_counter() - started < 5
