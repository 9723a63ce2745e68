"""sdmesh validate / show: exit codes, compiler-style errors, JSON, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "descriptors" / "examples"


def sdmesh(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdmesh", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )


def test_validate_tutorial_examples() -> None:
    result = sdmesh("validate", *map(str, sorted(EXAMPLES.glob("*.sf"))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(list(EXAMPLES.glob("*.sf")))


def test_validate_reports_every_error_compiler_style(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf"
    bad.write_text("sfConfig extends {\n    a 1 2;\n    b ATTRIB nope;\n}\n")
    result = sdmesh("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2:9: error: expected an attribute name, found number 2" in result.stderr
    assert f"{bad}:3:7: error: cannot resolve ATTRIB nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_error_shows_the_line_and_a_caret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf"
    bad.write_text("sfConfig extends {\n\tx (1 / 0);\n}\n")
    lines = sdmesh("validate", str(bad)).stderr.splitlines()
    assert lines[0] == f"{bad}:2:7: error: division by zero"
    assert lines[1] == "    " + " " * 8 + "x (1 / 0);"  # the tab shown as spaces
    assert lines[2] == "    " + " " * 13 + "^"  # ...so the caret stays under the '/'


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf"
    bad.write_text("sfConfig extends { x y; }")
    result = sdmesh("validate", "--json", str(EXAMPLES / "localVirtualPool.sf"), str(bad))
    good_report, bad_report = (json.loads(line) for line in result.stdout.splitlines())
    assert result.returncode == 2
    assert (
        good_report["valid"] and good_report["components"] == 6 and len(good_report["digest"]) == 64
    )
    assert not bad_report["valid"] and bad_report["diagnostics"][0]["line"] == 1


def test_show_json_shape() -> None:
    result = sdmesh("show", "--json", str(EXAMPLES / "asyncVirtualPool.sf"))
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)
    domain = tree["pool"]["smartDomain1"]["domain1"]
    assert domain["storageBackend"] == {"$lazy": "ATTRIB loop"}
    assert list(tree)[:3] == ["sfClass", "sfSyncTerminate", "myShell"]


def test_show_text_round_trips_through_stdin() -> None:
    shown = sdmesh("show", str(EXAMPLES / "localVirtualPool.sf")).stdout
    again = sdmesh("show", "-", stdin=shown)
    assert again.returncode == 0 and again.stdout == shown


def test_bad_input_never_prints_a_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sf"
    garbage.write_bytes(bytes(range(256)) * 10)
    for args in (
        ["validate", str(garbage)],
        ["show", str(tmp_path / "missing.sf")],
        ["show", str(tmp_path)],
    ):
        result = sdmesh(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip()


def test_usage_errors_exit_2() -> None:
    assert sdmesh("validate").returncode == 2
    assert sdmesh("show", "-D", "novalue", str(EXAMPLES / "localVirtualPool.sf")).returncode == 2
    assert sdmesh("--help").returncode == 0


def test_defines_feed_property_references(tmp_path: Path) -> None:
    path = tmp_path / "p.sf"
    path.write_text("sfConfig extends { image PROPERTY base.image; }")
    result = sdmesh("show", "--json", "-D", "base.image=/srv/img.qcow2", str(path))
    assert json.loads(result.stdout) == {"image": "/srv/img.qcow2"}


def test_describe_lists_components_and_their_schemas() -> None:
    listing = json.loads(sdmesh("describe", "--json").stdout)
    names = [item["name"] for item in listing]
    assert {"XenDomain", "Parallel", "Qcow2OverlayBackend", "Scheduler"} <= set(names)
    assert "PrimSchema" not in names
    doc = json.loads(sdmesh("describe", "--json", "Qcow2OverlayBackend").stdout)
    attributes = {a["name"]: a for a in doc["attributes"]}
    assert attributes["baseImage"]["required"] and attributes["baseFormat"]["default"] == '"qcow2"'
    assert doc["attributes"][0]["name"] == "baseImage"
    unknown = sdmesh("describe", "Nope")
    assert unknown.returncode == 2 and "known: " in unknown.stderr
