"""Operator key files: generated, written 0600/0644, read back, and refused when unsafe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmesh.trust.keys import (
    KeyFileError,
    OperatorKey,
    check_operator_name,
    decode_key,
    load_private_key,
    load_public_key,
    write_key_pair,
)


def test_a_key_pair_round_trips_through_its_files(tmp_path: Path) -> None:
    key = OperatorKey.generate("alice")
    private_path, public_path = write_key_pair(key, tmp_path)
    assert os.stat(private_path).st_mode & 0o777 == 0o600
    assert os.stat(public_path).st_mode & 0o777 == 0o644
    again = load_private_key(private_path)
    assert again.name == "alice" and again.public == key.public
    assert load_public_key(public_path) == key.public
    assert "PRIVATE" not in public_path.read_text()
    message = b"hello"
    assert key.public.verify(again.sign(message), message)
    assert not key.public.verify(again.sign(message), b"other")
    assert len(key.public.key_id) == 64  # the whole SHA-256: no short id to collide with


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    write_key_pair(OperatorKey.generate("alice"), tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_pair(OperatorKey.generate("alice"), tmp_path)
    write_key_pair(OperatorKey.generate("alice"), tmp_path, force=True)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    private_path, _ = write_key_pair(OperatorKey.generate("alice"), tmp_path)
    os.chmod(private_path, 0o640)
    with pytest.raises(KeyFileError, match="mode 0640"):
        load_private_key(private_path)


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    private_path, _ = write_key_pair(OperatorKey.generate("alice"), tmp_path)
    link = tmp_path / "link.key"
    link.symlink_to(private_path)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_private_key(link)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not a key file"),
        ('name = "alice"\n', "'private_key' is missing"),
        ('name = "Alice!"\nprivate_key = "ed25519:AAAA"\n', "bad operator name"),
        ('name = "alice"\nprivate_key = "rsa:AAAA"\n', "must start with"),
        ('name = "alice"\nprivate_key = "ed25519:***"\n', "not base64"),
        ('name = "alice"\nprivate_key = "ed25519:AAAA"\n', "32 bytes"),
    ],
)
def test_bad_key_files_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_private_key(path)
    assert str(path) in str(caught.value)


def test_missing_files_and_bad_names() -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        load_private_key(Path("/nonexistent/alice.key"))
    with pytest.raises(KeyFileError):
        check_operator_name("../etc")
    with pytest.raises(KeyFileError):
        decode_key("ed25519:" + "A" * 400, "x")


def test_a_trailing_newline_is_not_a_name() -> None:
    with pytest.raises(KeyFileError):
        check_operator_name("alice\n")


def test_key_files_are_checked_on_what_was_opened(tmp_path: Path) -> None:
    """No link followed, no FIFO waited on, never more than MAX_KEY_FILE + 1 bytes read."""
    from sdmesh.trust.keys import MAX_KEY_FILE, parse_public_key, read_key_file

    real = tmp_path / "real.pub"
    real.write_text("x = 1\n")
    link = tmp_path / "link.pub"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match="is a symbolic link"):
        read_key_file(link, private=False)
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(fifo, private=False)  # returns at once: opened O_NONBLOCK, never read
    big = tmp_path / "big.pub"
    big.write_bytes(b"#" * (MAX_KEY_FILE + 1))
    with pytest.raises(KeyFileError, match=f"larger than {MAX_KEY_FILE} bytes"):
        read_key_file(big, private=False)
    with pytest.raises(KeyFileError, match="nested too deeply"):
        parse_public_key(b"a = " + b"[" * 5000, "deep.pub")
