"""The cluster key ring: the primary key seals, every installed key opens.

Rotation without downtime (as in Serf's keyring): install the new key everywhere, make it the
primary everywhere, then remove the old one. At every step any two nodes share the key the
other seals with. The file format is one base64-encoded 32-byte key per line, primary first;
blank lines and ``#`` comment lines are allowed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

KEY_SIZE = 32
KEY_ID_SIZE = 4
_KEY_ID_LABEL = b"sdmesh key id v1\x00"
_MAX_FILE_SIZE = 1 << 20  # thousands of keys; stops a mistyped path like /dev/zero early


class KeyringError(Exception):
    """A key file or key ring operation that cannot be done; ``message`` is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def key_id(key: bytes) -> bytes:
    """Short public name of a key, carried in every frame header (a hash, never the key)."""
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_SIZE]


def generate_key() -> bytes:
    """A fresh key from the OS's CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse one base64 key; raises ``ValueError`` with a short reason."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from exc
    if len(key) != KEY_SIZE:
        raise ValueError(f"key is {len(key)} bytes, expected {KEY_SIZE}")
    return key


class Keyring:
    """An ordered set of keys; ``keys[0]`` is the primary.

    Mutated in place so every codec sharing the ring sees a rotation at once.
    """

    def __init__(self, keys: list[bytes]) -> None:
        self._keys: list[bytes] = []
        self._by_id: dict[bytes, bytes] = {}
        if not keys:
            raise KeyringError("a key ring needs at least one key")
        for key in keys:
            self.install(key)

    @classmethod
    def generate(cls) -> Keyring:
        return cls([generate_key()])

    @classmethod
    def parse(cls, text: str, source: str = "<keys>") -> Keyring:
        """Parse key file text; every bad line is reported as ``SOURCE:LINE: error: ...``."""
        keys: list[bytes] = []
        errors: list[str] = []
        seen: dict[bytes, int] = {}
        for lineno, key_or_error in _scan(text):
            if isinstance(key_or_error, str):
                errors.append(f"{source}:{lineno}: error: {key_or_error}")
            elif key_or_error in seen:
                errors.append(
                    f"{source}:{lineno}: error: duplicate key (same as line {seen[key_or_error]})"
                )
            else:
                seen[key_or_error] = lineno
                keys.append(key_or_error)
        if not errors and not keys:
            errors.append(
                f"{source}: error: no keys found "
                "(expected one base64-encoded 32-byte key per line; create one with "
                "`sdmesh keygen FILE`)"
            )
        if errors:
            raise KeyringError("\n".join(errors))
        try:
            return cls(keys)
        except KeyringError as exc:
            raise KeyringError(f"{source}: error: {exc.message}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read and parse a key file; I/O problems become a :class:`KeyringError` too."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_FILE_SIZE + 1)
            if len(data) > _MAX_FILE_SIZE:
                raise KeyringError(f"{os.fspath(path)}: error: too large to be a key file")
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KeyringError(f"{os.fspath(path)}: error: not a text file ({exc.reason})") from exc
        except OSError as exc:
            raise KeyringError(f"{os.fspath(path)}: error: cannot read: {exc.strerror}") from exc
        return cls.parse(text, source=os.fspath(path))

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def primary_id(self) -> bytes:
        return key_id(self._keys[0])

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[bytes]:
        return iter(tuple(self._keys))

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def find(self, kid: bytes) -> bytes | None:
        """The installed key with this id, if any."""
        return self._by_id.get(kid)

    def install(self, key: bytes) -> bytes:
        """Add a key as a secondary (opens, does not seal); installing twice is a no-op."""
        if len(key) != KEY_SIZE:
            raise KeyringError(f"key is {len(key)} bytes, expected {KEY_SIZE}")
        kid = key_id(key)
        existing = self._by_id.get(kid)
        if existing == key:
            return kid
        if existing is not None:  # 2**-32 per pair, but a silent mix-up would be worse
            raise KeyringError(f"key id {kid.hex()} collides with an installed key")
        self._keys.append(key)
        self._by_id[kid] = key
        return kid

    def use(self, key_or_id: bytes) -> None:
        """Make an installed key the primary (install it everywhere first)."""
        key = self._resolve(key_or_id)
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key_or_id: bytes) -> None:
        """Uninstall a secondary key; the primary cannot be removed (``use`` another first)."""
        key = self._resolve(key_or_id)
        if key == self._keys[0]:
            raise KeyringError(
                f"key {key_id(key).hex()} is the primary key; make another key primary first"
            )
        self._keys.remove(key)
        del self._by_id[key_id(key)]

    def replace(self, other: Keyring) -> None:
        """Take ``other``'s keys in place (a reloaded key file), keeping this object shared."""
        self._keys = list(other._keys)
        self._by_id = dict(other._by_id)

    def to_text(self) -> str:
        return "".join(encode_key(key) + "\n" for key in self._keys)

    def _resolve(self, key_or_id: bytes) -> bytes:
        if len(key_or_id) == KEY_ID_SIZE:
            key = self._by_id.get(key_or_id)
        else:
            key = key_or_id if key_or_id in self._keys else None
        if key is None:
            shown = key_or_id.hex() if len(key_or_id) == KEY_ID_SIZE else key_id(key_or_id).hex()
            raise KeyringError(f"key {shown} is not installed")
        return key


def _scan(text: str) -> Iterator[tuple[int, bytes | str]]:
    """Yield ``(line number, key or error message)`` for every key line."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield lineno, decode_key(line)
        except ValueError as exc:
            yield lineno, str(exc)


def key_lines(text: str) -> list[int]:
    """Zero-based indexes of the lines of ``text`` that hold keys (for comment-keeping edits)."""
    return [
        index
        for index, raw in enumerate(text.splitlines())
        if raw.strip() and not raw.strip().startswith("#")
    ]


def permission_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning if a key file is readable by group or others (what ssh refuses outright)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{os.fspath(path)}: warning: key file is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {os.fspath(path)}`"
        )
    return None


def write_key_file(path: str | os.PathLike[str], text: str, *, overwrite: bool) -> None:
    """Write ``text`` atomically with mode 0600.

    Readers see the old file or the new one, never a torn one; with ``overwrite=False`` an
    existing file is never replaced, even if it appears between check and write. Raises
    ``FileExistsError`` or another ``OSError``.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        if overwrite:
            os.replace(tmp_name, target)
        else:
            _link_exclusive(tmp_name, target, text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    _fsync_dir(target.parent)


def _link_exclusive(tmp_name: str, target: Path, text: str) -> None:
    """Publish without replacing: ``link`` fails if the target exists (atomic no-clobber)."""
    try:
        os.link(tmp_name, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links on this file system: exclusive create still never clobbers.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
