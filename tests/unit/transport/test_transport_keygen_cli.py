"""``sdmesh keygen``: files, rotation edits, exit codes and messages."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli.keygen import keygen
from sdmesh.transport.keyring import Keyring, key_id


def run(*args: str) -> Result:
    return CliRunner().invoke(keygen, list(args))


@pytest.fixture
def ring_file(tmp_path: Path) -> Path:
    path = tmp_path / "ring.key"
    assert run(str(path)).exit_code == 0
    return path


@pytest.mark.parametrize("args", [[], ["-"]])
def test_prints_a_key_to_stdout(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 0
    assert len(Keyring.parse(result.stdout)) == 1
    assert result.stdout.count("\n") == 1


def test_writes_a_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    ring = Keyring.load(path)
    assert len(ring) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.primary_id.hex() in result.stderr
    assert len(path.read_text().splitlines()) == 1  # exactly one key line, nothing else


def test_refuses_to_overwrite_unless_forced(ring_file: Path) -> None:
    before = ring_file.read_text()
    result = run(str(ring_file))
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert ring_file.read_text() == before
    assert run("--force", str(ring_file)).exit_code == 0
    assert ring_file.read_text() != before


def test_add_appends_a_secondary_and_keeps_comments(ring_file: Path) -> None:
    ring_file.write_text("# prod cluster\n" + ring_file.read_text())
    primary = Keyring.load(ring_file).primary
    result = run("--add", str(ring_file))
    assert result.exit_code == 0, result.output
    ring = Keyring.load(ring_file)
    assert len(ring) == 2 and ring.primary == primary
    assert ring_file.read_text().startswith("# prod cluster\n")
    assert f"added key {key_id(ring.keys[1]).hex()}" in result.stderr
    assert stat.S_IMODE(ring_file.stat().st_mode) == 0o600


def test_rotate_puts_a_new_primary_first_and_keeps_the_old_keys(ring_file: Path) -> None:
    ring_file.write_text("# prod cluster\n" + ring_file.read_text())
    old = Keyring.load(ring_file).primary
    assert run("--rotate", str(ring_file)).exit_code == 0
    ring = Keyring.load(ring_file)
    assert ring.keys[1:] == (old,) and ring.primary != old
    assert ring_file.read_text().startswith("# prod cluster\n")


def test_the_safe_rotation_sequence(ring_file: Path) -> None:
    old = Keyring.load(ring_file).primary
    assert run("--add", str(ring_file)).exit_code == 0
    new = Keyring.load(ring_file).keys[1]
    assert run("--use", key_id(new).hex(), str(ring_file)).exit_code == 0
    assert Keyring.load(ring_file).keys == (new, old)
    result = run("--remove", key_id(old).hex(), str(ring_file))
    assert result.exit_code == 0, result.output
    assert Keyring.load(ring_file).keys == (new,)


def test_removing_the_primary_is_refused(ring_file: Path) -> None:
    primary = Keyring.load(ring_file).primary_id.hex()
    result = run("--remove", primary, str(ring_file))
    assert result.exit_code == 2
    assert "is the primary key" in result.stderr
    result = run("--use", "deadbeef", str(ring_file))
    assert result.exit_code == 2
    assert f"installed: {primary}" in result.stderr


def test_a_broken_file_is_reported_with_its_line(ring_file: Path) -> None:
    ring_file.write_text(ring_file.read_text() + "not-a-key\n")
    result = run("--add", str(ring_file))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{ring_file}:2: error: not valid base64")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--add", "--rotate", "F"], "cannot be combined"),
        (["--add"], "needs a key FILE"),
        (["--add", "-"], "needs a key FILE"),
        (["--add", "--force", "F"], "--force does not apply"),
        (["--add", "missing.key"], "does not exist"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_write_failures_exit_1(tmp_path: Path) -> None:
    result = run(str(tmp_path / "no" / "such" / "dir.key"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write")
