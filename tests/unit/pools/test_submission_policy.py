"""Issue 11.5 across the wire: the CLI resolves includes, PROPERTY and ENVPROPERTY where the
user is and sends them resolved; the agent's build_spec accepts that, accepts includes sent
with a hand-written request, and refuses what would read the agent's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.language import resolve_file
from sdmesh.pools.submission import SubmissionError, build_spec_and_tree, request_body


def test_the_cli_sends_includes_and_properties_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sizes.sf").write_text("Sizes extends { memory 512; }\n")
    (tmp_path / "pool.sf").write_text(
        '#include "sizes.sf"\n'
        "sfConfig extends Sizes { owner ENVPROPERTY SDMESH_TEST_OWNER; "
        "zone PROPERTY zone; }\n"
    )
    monkeypatch.setenv("SDMESH_TEST_OWNER", "alice")
    body = request_body(resolve_file(tmp_path / "pool.sf", properties={"zone": "b"}), "p")
    monkeypatch.delenv("SDMESH_TEST_OWNER")
    monkeypatch.chdir("/")
    spec, tree = build_spec_and_tree(body)
    assert "ENVPROPERTY" not in spec.text and "alice" in spec.text
    assert (tree.get("memory"), tree.get("owner"), tree.get("zone")) == (512, "alice", "b")


def test_a_hand_written_request_may_send_its_includes() -> None:
    body = {
        "name": "p",
        "descriptor": '#include "lib/sizes.sf"\nsfConfig extends Sizes { }\n',
        "includes": {"lib/sizes.sf": "Sizes extends { memory 256; }\n"},
    }
    _, tree = build_spec_and_tree(body)
    assert tree.get("memory") == 256
    for bad in ({"../x.sf": "a 1;"}, {"x.sf": 3}, ["x.sf"]):
        with pytest.raises(SubmissionError, match="'includes'"):
            build_spec_and_tree({**body, "includes": bad})


def test_lazy_environment_reads_are_refused_at_submission() -> None:
    body = {"name": "p", "descriptor": "sfConfig extends { t LAZY ENVPROPERTY TOKEN; }\n"}
    with pytest.raises(SubmissionError, match="would read this agent's properties"):
        build_spec_and_tree(body)
