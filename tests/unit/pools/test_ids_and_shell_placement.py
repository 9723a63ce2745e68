"""Names from the mesh are checked again (issue 11 item 6), and shell leaves go only to hosts
that allow them (item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from sdmesh.language import resolve_text
from sdmesh.pools.layout import layout
from sdmesh.pools.placement import (
    NO_SHELL_ANYWHERE,
    Demand,
    HostOffer,
    place,
    shell_host,
)
from sdmesh.pools.records import (
    Order,
    PoolRecord,
    RecordFormatError,
    Report,
    check_pool_id,
    checked_rumor_ids,
)

DIGEST = "ab" * 32


@pytest.mark.parametrize("bad", ["web\n", "web\r", "\nweb", "Web", "-web", "a" * 64, "a/b"])
def test_pool_ids_are_refused_whole_including_a_trailing_newline(bad: str) -> None:
    with pytest.raises(ValueError, match="bad pool name"):
        check_pool_id(bad)


def order(**changes: Any) -> list[Any]:
    wire = Order("web", 1, "h0", DIGEST, "sfConfig:vm", "deploy", "sfConfig:vm").to_wire()
    fields = ["pool", "generation", "shepherd", "digest", "path", "op", "unit"]
    for name, value in changes.items():
        wire[fields.index(name)] = value
    return wire


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"pool": "web\n"}, "malformed pool id"),
        ({"pool": "../../etc"}, "malformed pool id"),
        ({"digest": "../../../etc/passwd"}, "malformed descriptor digest"),
        ({"shepherd": "h0/../x"}, "malformed member name"),
        ({"path": "sfConfig:vm\x00"}, "malformed component path"),
        ({"unit": ""}, "malformed component path"),
        ({"shepherd": ".."}, "malformed member name"),
        ({"shepherd": "."}, "malformed member name"),
        ({"shepherd": "h\u009b1"}, "malformed member name"),  # C1: a terminal's CSI
        ({"shepherd": "h\u202e1"}, "malformed member name"),  # bidi override
        ({"path": "sfConfig:..:vm"}, "malformed component path"),
        ({"path": "../vm"}, "malformed component path"),
        ({"path": "sfConfig:vm\u0085"}, "malformed component path"),  # C1 next line
        ({"unit": "sfConfig:\u2066vm"}, "malformed component path"),  # bidi isolate
    ],
)
def test_orders_from_the_mesh_carry_valid_ids(changes: dict[str, Any], why: str) -> None:
    assert Order.from_wire(order()).pool == "web"
    with pytest.raises(RecordFormatError, match=why):
        Order.from_wire(order(**changes))


def test_reports_and_records_from_the_mesh_carry_valid_ids() -> None:
    with pytest.raises(RecordFormatError, match="malformed member name"):
        Report.from_wire(["web", 1, "h\n1", "sfConfig:vm", "deploy", None])
    with pytest.raises(RecordFormatError, match="malformed pool id"):
        Report.from_wire(["web\n", 1, "h1", "sfConfig:vm", "deploy", None])
    bad_host = PoolRecord("web", DIGEST, 1, "h0", placement={"sfConfig:vm": "h/1"})
    with pytest.raises(RecordFormatError, match="malformed member name"):
        PoolRecord.decode(bad_host.encode())
    bad_digest = PoolRecord("web", "../x", 1, "h0")
    with pytest.raises(RecordFormatError, match="malformed descriptor digest"):
        PoolRecord.decode(bad_digest.encode())
    good = PoolRecord("web", DIGEST, 1, "h0", placement={"sfConfig:vm": "h1"})
    assert PoolRecord.decode(good.encode()) == good


def test_specs_and_submissions_carry_printable_bounded_kinds() -> None:
    from sdmesh.pools.records import PoolSpec
    from sdmesh.pools.submission import SubmissionError, build_spec, request_body

    from ..trust.helpers import VM_POOL

    resolved = resolve_text(VM_POOL)
    body = request_body(resolved, "web")
    spec = build_spec(body)
    assert PoolSpec.decode(spec.encode()) == spec
    for bad in ("x" * 129, "Evil\u202eMV", "a\nb", "\x1b[31m", 7):
        with pytest.raises(SubmissionError, match="'kinds': the prototype of sfConfig:vm"):
            build_spec({**body, "kinds": {"sfConfig:vm": bad}})
        if isinstance(bad, str):  # a spec from the mesh is checked again
            forged = PoolSpec("web", spec.text, spec.digest, {"sfConfig:vm": bad})
            with pytest.raises(RecordFormatError, match="malformed component kind"):
                PoolSpec.decode(forged.encode())
    with pytest.raises(SubmissionError, match="'kinds' must map"):
        build_spec({**body, "kinds": ["VM"]})
    # Paths the descriptor does not have are ignored, never stored.
    assert "sfConfig:ghost" not in build_spec({**body, "kinds": {"sfConfig:ghost": "X"}}).kinds


# ------------------------------------------------------------------------ shell placement


def offer(name: str, shell: bool = False) -> HostOffer:
    return HostOffer(name, 8, 8192, 8192, shell=shell)


def test_units_with_shell_go_only_to_hosts_that_allow_it() -> None:
    plan = place([Demand("u", 1, 128, shell=True)], [offer("a"), offer("b", shell=True)])
    assert plan.assignments == {"u": "b"}
    refused = place([Demand("u", 1, 128, shell=True)], [offer("a"), offer("b")])
    assert [u.reason for u in refused.unplaced] == [NO_SHELL_ANYWHERE]
    assert place([Demand("u", 1, 128)], [offer("a")]).assignments == {"u": "a"}


def test_shell_leaves_run_beside_the_shepherd_only_if_it_allows_shell() -> None:
    offers = [offer("a"), offer("b", shell=True), offer("c", shell=True)]
    assert shell_host(offers, "c") == "c"
    assert shell_host(offers, "a") == "b"
    assert shell_host([offer("a")], "a") is None


LIB = (
    '#include "org/smartfrog/components.sf"\n'
    '#include "org/smartfrog/services/shellscript/components.sf"\n'
)


def test_the_layout_names_the_leaves_that_need_allow_shell() -> None:
    text = (
        "sfConfig extends Compound { idle extends BashShell; "
        'run extends Script { shell LAZY ATTRIB idle; deployScript "id"; } '
        'own extends Shell { exec extends DATA Exec { cmd [|"/bin/id"|]; } } }'
    )
    cut = layout(resolve_text(LIB + text, "t.sf").root)
    assert cut.shell == ["sfConfig:run", "sfConfig:own"]
    assert "sfConfig:idle" in cut.local


def shepherd_orders(offers: list[HostOffer]) -> tuple[dict[str, str], list[str]]:
    """Where a new pool's shepherd (h0) places each leaf, and its warnings."""
    from sdmesh.pools import shepherd as sc

    text = (
        "sfConfig extends Compound { idle extends BashShell; "
        'run extends Script { shell LAZY ATTRIB idle; deployScript "id"; } }'
    )
    tree = resolve_text(LIB + text, "t.sf").root
    record = PoolRecord("web", DIGEST, 1, "h0")
    core = sc.Shepherd(record, tree, layout(tree), {}, tuple(offers))
    actions = core.handle(sc.Begin(), 0.0)
    warnings = [a.message for a in actions if isinstance(a, sc.Warning)]
    return dict(core.placement), warnings


def test_the_shepherd_sends_shell_leaves_to_a_host_that_allows_shell() -> None:
    sent, warnings = shepherd_orders([offer("h0"), offer("h1", shell=True)])
    assert sent == {"sfConfig:idle": "h0", "sfConfig:run": "h1"} and warnings == []


def test_with_no_host_allowing_shell_the_shepherd_says_so() -> None:
    sent, warnings = shepherd_orders([offer("h0"), offer("h1")])
    assert sent["sfConfig:run"] == "h0"  # which refuses, naming allow-shell
    assert warnings == [f"cannot be placed: {NO_SHELL_ANYWHERE}"]


def test_rumors_carry_valid_ids() -> None:
    checked_rumor_ids("web", {"digest": DIGEST, "shepherd": "h0", "state": "running"})
    checked_rumor_ids("web", {"by": "h0", "gen": 3})  # a tombstone
    for key, body in [
        ("web\n", {}),
        ("web", {"digest": "../../x"}),
        ("web", {"shepherd": "h0\x1b[2J"}),
        ("web", {"shepherd": 7}),
    ]:
        with pytest.raises(RecordFormatError):
            checked_rumor_ids(key, body)
