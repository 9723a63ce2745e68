"""The key-or-explicitly-insecure policy behind ``sdmesh join``, and key file reloads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdmesh.transport.keyring import KEY_SIZE, Keyring, KeyringError, write_key_file
from sdmesh.transport.seal import Channel, InsecureCodec, SealedCodec
from sdmesh.transport.security import TransportSecurity, load_security

K1, K2 = (bytes([n]) * KEY_SIZE for n in (1, 2))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ring.key"
    write_key_file(path, Keyring([K1]).to_text(), overwrite=False)
    return path


def test_no_key_and_no_insecure_flag_is_refused() -> None:
    with pytest.raises(KeyringError) as err:
        load_security(None, insecure=False)
    assert "--key-file" in err.value.message and "--insecure" in err.value.message


def test_insecure_must_be_explicit_and_alone(key_file: Path) -> None:
    with pytest.raises(KeyringError, match="mutually exclusive"):
        load_security(key_file, insecure=True)
    security = load_security(None, insecure=True)
    assert security.is_insecure
    assert isinstance(security.new_codec(max_frame=1400), InsecureCodec)


def test_a_key_file_gives_sealed_codecs_with_their_own_sessions(key_file: Path) -> None:
    security = load_security(key_file, insecure=False, cluster="prod")
    first, second = (security.new_codec(max_frame=1400) for _ in range(2))
    assert isinstance(first, SealedCodec) and isinstance(second, SealedCodec)
    assert first.session != second.session
    frame = first.seal("hi", channel=Channel.DATAGRAM, now=1.0)
    assert second.open(frame, channel=Channel.DATAGRAM, now=1.0).obj == "hi"


def test_bad_key_file_errors_are_printable(tmp_path: Path) -> None:
    path = tmp_path / "ring.key"
    path.write_text("oops!\n")
    with pytest.raises(KeyringError, match="^" + re.escape(f"{path}:1: error: not valid base64")):
        load_security(path, insecure=False)


def test_reload_rotates_every_codec_at_once(key_file: Path) -> None:
    security = TransportSecurity.from_key_file(key_file)
    codec = security.new_codec(max_frame=1400)
    write_key_file(key_file, Keyring([K2, K1]).to_text(), overwrite=True)
    security.reload()
    assert isinstance(codec, SealedCodec)
    assert codec.keyring.primary == K2


def test_a_bad_reload_keeps_the_current_keys(key_file: Path) -> None:
    security = TransportSecurity.from_key_file(key_file)
    key_file.write_text("broken\n")
    with pytest.raises(KeyringError):
        security.reload()
    assert security.keyring is not None and security.keyring.keys == (K1,)
    with pytest.raises(KeyringError, match="no key file"):
        TransportSecurity.insecure().reload()
