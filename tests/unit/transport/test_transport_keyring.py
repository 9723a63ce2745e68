"""Key file parsing, key ring operations, and atomic 0600 writes."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from sdmesh.transport.keyring import (
    KEY_SIZE,
    Keyring,
    KeyringError,
    encode_key,
    generate_key,
    key_id,
    permission_warning,
    write_key_file,
)

K1, K2, K3 = (bytes([n]) * KEY_SIZE for n in (1, 2, 3))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_parse_keeps_order_and_skips_comments_and_blank_lines() -> None:
    text = f"# cluster prod\n\n  {b64(K2)}  \n# old key, remove after 2025-01\n{b64(K1)}\n"
    ring = Keyring.parse(text, source="ring.key")
    assert ring.keys == (K2, K1)
    assert ring.primary == K2
    assert ring.primary_id == key_id(K2)


def test_bad_lines_are_all_reported_with_their_location() -> None:
    text = f"{b64(K1)}\nnot base64!\n{b64(b'short')}\n\n{b64(K1)}\n"
    with pytest.raises(KeyringError) as err:
        Keyring.parse(text, source="ring.key")
    lines = err.value.message.splitlines()
    assert lines[0].startswith("ring.key:2: error: not valid base64")
    assert lines[1] == "ring.key:3: error: key is 5 bytes, expected 32"
    assert lines[2] == "ring.key:5: error: duplicate key (same as line 1)"
    assert len(lines) == 3


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_a_file_without_keys_is_an_error(text: str) -> None:
    with pytest.raises(KeyringError, match=r"^ring.key: error: no keys found"):
        Keyring.parse(text, source="ring.key")


def test_urlsafe_base64_is_rejected() -> None:
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * KEY_SIZE).decode()
    with pytest.raises(KeyringError, match=r"ring\.key:1: error: not valid base64"):
        Keyring.parse(urlsafe + "\n", source="ring.key")


def test_load_reports_unreadable_files_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyringError) as err:
        Keyring.load(missing)
    assert err.value.message == f"{missing}: error: cannot read: No such file or directory"
    binary = tmp_path / "bin.key"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeyringError, match="not a text file"):
        Keyring.load(binary)


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    path.write_text("garbage\n")
    with pytest.raises(KeyringError, match="^" + re.escape(f"{path}:1: error: ")):
        Keyring.load(path)


def test_install_use_remove() -> None:
    ring = Keyring([K1])
    assert ring.install(K2) == key_id(K2)
    assert ring.install(K2) == key_id(K2)  # idempotent
    assert ring.keys == (K1, K2)
    assert ring.find(key_id(K2)) == K2
    ring.use(key_id(K2))
    assert ring.primary == K2
    ring.remove(K1)
    assert ring.keys == (K2,)
    assert ring.find(key_id(K1)) is None


def test_the_primary_cannot_be_removed() -> None:
    ring = Keyring([K1, K2])
    with pytest.raises(KeyringError, match="is the primary key"):
        ring.remove(K1)
    assert ring.keys == (K1, K2)


def test_unknown_and_malformed_keys_are_refused() -> None:
    ring = Keyring([K1])
    with pytest.raises(KeyringError, match="not installed"):
        ring.use(K3)
    with pytest.raises(KeyringError, match="not installed"):
        ring.remove(key_id(K3))
    with pytest.raises(KeyringError, match="expected 32"):
        ring.install(b"short")
    with pytest.raises(KeyringError, match="at least one key"):
        Keyring([])


def test_replace_updates_a_shared_ring_in_place() -> None:
    ring = Keyring([K1])
    alias = ring
    ring.replace(Keyring([K2, K1]))
    assert alias.primary == K2
    assert alias.find(key_id(K2)) == K2


def test_key_ids_are_short_stable_and_distinct() -> None:
    assert len(key_id(K1)) == 4
    assert key_id(K1) == key_id(bytes(K1))
    assert key_id(K1) != key_id(K2)


def test_generated_keys_are_fresh() -> None:
    keys = {generate_key() for _ in range(16)}
    assert len(keys) == 16
    assert all(len(key) == KEY_SIZE for key in keys)
    assert len(Keyring.generate()) == 1


def test_text_round_trip() -> None:
    ring = Keyring([K3, K1])
    assert ring.to_text() == f"{encode_key(K3)}\n{encode_key(K1)}\n"
    assert Keyring.parse(ring.to_text()).keys == ring.keys


def test_write_is_0600_and_never_clobbers_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    write_key_file(path, Keyring([K1]).to_text(), overwrite=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(path, Keyring([K2]).to_text(), overwrite=False)
    assert Keyring.load(path).keys == (K1,)
    write_key_file(path, Keyring([K2]).to_text(), overwrite=True)
    assert Keyring.load(path).keys == (K2,)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["ring.key"]  # no temporary files left behind


def test_permission_warning(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    write_key_file(path, Keyring([K1]).to_text(), overwrite=False)
    assert permission_warning(path) is None
    path.chmod(0o644)
    warning = permission_warning(path)
    assert warning is not None and "chmod 600" in warning
