"""Operator keys: Ed25519 key pairs that sign descriptors, and the files that hold them.

An operator's private key stays with the operator (mode 0600, refused when group or others
can read it, as ssh refuses a loose identity file); the public key is copied to every host's
trust store (:mod:`sdmesh.trust.store`) with the role the host grants it. Both files are small
TOML documents, so an administrator can read and edit them::

    # sdmesh operator public key
    name = "alice"
    public_key = "ed25519:<base64 of the 32-byte key>"

A key is known by its *key id*: the SHA-256 of the raw public key, in hex (all 32 bytes: a
shorter id could be matched by a key made for the purpose, and a signature names its key by
id alone).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from sdmesh.safeio import write_private

OPERATOR_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
KEY_PREFIX: Final = "ed25519:"
KEY_BYTES: Final = 32
KEY_ID_HEX: Final = 64
#: Larger key files are not keys (and are not read whole).
MAX_KEY_FILE: Final = 16 * 1024


class KeyFileError(ValueError):
    """A key or key file that cannot be used; the message names the file and the reason."""


def check_operator_name(name: str) -> str:
    """Operator names become file names in the trust store: a-z, 0-9, '.', '_', '-'."""
    if not OPERATOR_NAME.fullmatch(name):
        raise KeyFileError(
            f"bad operator name {name!r}: use 1-63 characters a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def key_id_of(raw_public: bytes) -> str:
    """The key id of a raw public key: its whole SHA-256, in hex."""
    return hashlib.sha256(raw_public).hexdigest()


def encode_key(raw: bytes) -> str:
    return KEY_PREFIX + base64.b64encode(raw).decode()


def decode_key(text: str, what: str) -> bytes:
    """The 32 raw bytes of ``ed25519:<base64>``; KeyFileError naming ``what`` otherwise."""
    if not text.startswith(KEY_PREFIX):
        raise KeyFileError(f"{what}: a key must start with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{what}: the key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyFileError(f"{what}: an Ed25519 key has {KEY_BYTES} bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True)
class PublicKey:
    """An operator's public key, by name (as its holder calls it) and id (what signs)."""

    name: str
    raw: bytes

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    @property
    def text(self) -> str:
        return encode_key(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def file_text(self) -> str:
        return (
            f"# sdmesh operator public key of {self.name} (id {self.key_id}).\n"
            "# To trust it on a host: sdmesh operator trust FILE --role read|operate|admin\n"
            f'name = "{self.name}"\n'
            f'public_key = "{self.text}"\n'
        )


@dataclass(frozen=True)
class OperatorKey:
    """An operator's private key (it signs; never leaves the operator's machine)."""

    name: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> OperatorKey:
        return cls(check_operator_name(name), Ed25519PrivateKey.generate())

    @property
    def public(self) -> PublicKey:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.name, raw)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def file_text(self) -> str:
        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return (
            f"# sdmesh operator PRIVATE key of {self.name} (id {self.public.key_id}): "
            "keep it secret, mode 0600.\n"
            f'name = "{self.name}"\n'
            f'private_key = "{encode_key(seed)}"\n'
        )


def _toml(data: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise KeyFileError(f"{where}: not a key file ({error})") from None
    except (RecursionError, MemoryError, ValueError):
        # Deeply nested arrays or tables exhaust the parser's recursion: not a key file.
        raise KeyFileError(f"{where}: not a key file (nested too deeply)") from None


def _string(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise KeyFileError(f"{where}: {key!r} is missing or not a string")
    return value


def loose_mode(info: os.stat_result, *, readable: bool) -> str | None:
    """Why a file's mode or owner makes it untrustworthy, or None.

    Key files and trust files are refused when group or others may write them (anyone could
    then plant a key), private keys also when they may read them, and both when owned by
    someone other than this process's user or root.
    """
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    bits = stat.S_IMODE(info.st_mode)
    if bits & (0o077 if readable else 0o022):
        wanted = "0600" if readable else "0644 or stricter"
        what = "read or write" if readable else "write"
        return f"mode {bits:04o} lets others {what} it (want {wanted})"
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by uid {info.st_uid}, neither root nor this user"
    return None


def read_key_file(path: Path, *, private: bool) -> bytes:
    """A key file's bytes, refusing symlinks, loose modes and oversized files.

    The checks are made on the file opened (``O_NOFOLLOW``, then ``fstat``), not on its name,
    so a file swapped in between is never read; ``O_NONBLOCK`` keeps a FIFO planted there
    from blocking the open, and at most ``MAX_KEY_FILE + 1`` bytes are read whatever the size
    says (a file that grows, or a device, cannot make the agent read without end)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KeyFileError(f"{path}: is a symbolic link; give the file itself") from None
        raise KeyFileError(f"{path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = loose_mode(info, readable=private)
        if problem is not None:
            raise KeyFileError(f"{path}: {problem}")
        chunks: list[bytes] = []
        left = MAX_KEY_FILE + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as error:
        raise KeyFileError(f"{path}: cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE} bytes, not a key file")
    return data


def load_private_key(path: Path) -> OperatorKey:
    doc = _toml(read_key_file(path, private=True), str(path))
    name = _string(doc, "name", str(path))
    try:
        check_operator_name(name)
    except KeyFileError as error:
        raise KeyFileError(f"{path}: {error}") from None
    seed = decode_key(_string(doc, "private_key", str(path)), str(path))
    return OperatorKey(name, Ed25519PrivateKey.from_private_bytes(seed))


def parse_public_key(data: bytes, where: str) -> tuple[PublicKey, dict[str, Any]]:
    """A public key file's key and whole document (trust files add ``role``, ``comment``)."""
    doc = _toml(data, where)
    name = _string(doc, "name", where)
    try:
        check_operator_name(name)
    except KeyFileError as error:
        raise KeyFileError(f"{where}: {error}") from None
    return PublicKey(name, decode_key(_string(doc, "public_key", where), where)), doc


def load_public_key(path: Path) -> PublicKey:
    return parse_public_key(read_key_file(path, private=False), str(path))[0]


def write_key_pair(key: OperatorKey, directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """``NAME.key`` (0600) and ``NAME.pub`` (0644) in ``directory``; refuses to overwrite
    unless ``force``."""
    private_path = directory / f"{key.name}.key"
    public_path = directory / f"{key.name}.pub"
    for path in (private_path, public_path):
        if not force and (path.exists() or path.is_symlink()):
            raise KeyFileError(f"{path}: already exists (--force replaces it)")
    write_private(private_path, key.file_text().encode(), 0o600)
    write_private(public_path, key.public.file_text().encode(), 0o644)
    return private_path, public_path
