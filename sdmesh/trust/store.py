"""A host's trust store: the operator public keys it accepts signatures from, with their roles.

A directory (``/etc/sdmesh/operators.d`` by default), one TOML file per operator,
``NAME.toml``::

    name = "alice"
    public_key = "ed25519:..."
    role = "operate"          # read, operate or admin
    comment = "on-call team"  # optional

and an optional ``revoked`` file: one key id (or ``ed25519:`` public key) per line, ``#``
comments. Deleting an operator's file stops trusting it; listing its key in ``revoked`` also
keeps it out if the file comes back (from a backup, or configuration management that has not
caught up). ``sdmesh operator trust`` and ``sdmesh operator revoke`` do both safely.

Deny by default, and fail closed: a file that is malformed, a symlink, not owned by root (or
the agent's user) or writable by others is skipped with a located problem; a directory or a
``revoked`` file that cannot be trusted makes the whole store empty, since ignoring it could
trust a key someone revoked. ``TrustStore.load`` is pure apart from reading the directory, so
the agent can call it again on SIGHUP and swap the result in.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sdmesh.safeio import write_private
from sdmesh.trust import DEFAULT_OPERATORS_DIR as DEFAULT_OPERATORS_DIR
from sdmesh.trust.keys import (
    KEY_ID_HEX,
    KEY_PREFIX,
    KeyFileError,
    PublicKey,
    decode_key,
    key_id_of,
    parse_public_key,
    read_key_file,
)
from sdmesh.trust.roles import Role

REVOKED_FILE: Final = "revoked"
SUFFIX: Final = ".toml"
MAX_OPERATORS: Final = 1000
MAX_COMMENT: Final = 200


@dataclass(frozen=True)
class TrustedOperator:
    key: PublicKey
    role: Role
    comment: str = ""
    source: str = ""  # the file it came from, for messages


@dataclass(frozen=True)
class TrustStore:
    """Operators trusted by key id, revoked key ids, and what was wrong when loading."""

    operators: dict[str, TrustedOperator] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()
    directory: str = ""

    def lookup(self, key_id: str) -> TrustedOperator | None:
        """The operator trusted under ``key_id``; None when unknown or revoked."""
        if key_id in self.revoked:
            return None
        return self.operators.get(key_id)

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self.revoked

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        """Read ``directory``; never raises (problems are listed, and fail closed): whatever
        goes wrong that the checks below did not foresee (a parser's recursion, memory)
        leaves a store that trusts nobody, never an agent that cannot start or reload."""
        try:
            return cls._load(directory)
        except Exception as error:  # fail closed on anything
            problem = f"{directory}: could not be read ({type(error).__name__})"
            return cls(problems=(f"{problem}: no operator is trusted",), directory=str(directory))

    @classmethod
    def _load(cls, directory: Path) -> TrustStore:
        where = str(directory)

        def nobody(problem: str) -> TrustStore:
            return cls(problems=(f"{problem}: no operator is trusted",), directory=where)

        try:
            info = os.lstat(directory)
        except OSError as error:
            return nobody(f"{where}: {error.strerror}")
        if not stat.S_ISDIR(info.st_mode):
            return nobody(f"{where}: not a directory")
        problem = _loose_directory(info)
        if problem is not None:
            return nobody(f"{where}: {problem}")
        try:
            revoked = _read_revoked(directory / REVOKED_FILE)
            names = sorted(p for p in os.listdir(directory) if p.endswith(SUFFIX))
        except KeyFileError as error:
            return nobody(str(error))
        except OSError as error:
            return nobody(f"{where}: {error.strerror}")
        operators: dict[str, TrustedOperator] = {}
        problems: list[str] = []
        if len(names) > MAX_OPERATORS:
            problems.append(f"{where}: more than {MAX_OPERATORS} operator files; the rest skipped")
            names = names[:MAX_OPERATORS]
        for name in names:
            try:
                operator = _read_operator(directory / name)
            except KeyFileError as error:
                problems.append(f"{error}: skipped")
                continue
            key_id = operator.key.key_id
            if key_id in revoked:
                continue
            if key_id in operators:
                earlier = operators[key_id]
                problems.append(
                    f"{directory / name}: same key as {earlier.source}: the lower role counts"
                )
                if operator.role >= earlier.role:
                    continue
            operators[key_id] = operator
        return cls(operators, frozenset(revoked), tuple(problems), where)


def _loose_directory(info: os.stat_result) -> str | None:
    if stat.S_IMODE(info.st_mode) & 0o022:
        return f"mode {stat.S_IMODE(info.st_mode):04o} lets others add keys (want 0755 or stricter)"
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by uid {info.st_uid}, neither root nor this user"
    return None


def _read_operator(path: Path) -> TrustedOperator:
    key, doc = parse_public_key(read_key_file(path, private=False), str(path))
    if path.name != f"{key.name}{SUFFIX}":
        raise KeyFileError(f"{path}: holds operator {key.name!r}; name the file {key.name}{SUFFIX}")
    role_text = doc.get("role")
    if not isinstance(role_text, str):
        raise KeyFileError(f"{path}: 'role' is missing (read, operate or admin)")
    try:
        role = Role.parse(role_text)
    except ValueError as error:
        raise KeyFileError(f"{path}: {error}") from None
    comment = doc.get("comment", "")
    if not isinstance(comment, str) or not comment_is_safe(comment):
        raise KeyFileError(
            f"{path}: 'comment' must be one line of at most {MAX_COMMENT} printable "
            "characters (no control or bidirectional-override characters)"
        )
    unknown = sorted(set(doc) - {"name", "public_key", "role", "comment"})
    if unknown:
        raise KeyFileError(f"{path}: unknown setting {unknown[0]!r}")
    return TrustedOperator(key, role, comment, str(path))


def _read_revoked(path: Path) -> set[str]:
    if not (path.exists() or path.is_symlink()):
        return set()
    data = read_key_file(path, private=False)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not text") from None
    revoked: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.startswith(KEY_PREFIX):
            revoked.add(key_id_of(decode_key(entry, f"{path}:{number}")))
        elif len(entry) == KEY_ID_HEX and all(c in "0123456789abcdef" for c in entry):
            revoked.add(entry)
        else:
            raise KeyFileError(
                f"{path}:{number}: not a key id ({KEY_ID_HEX} hex digits) or an {KEY_PREFIX} key"
            )
    return revoked


def comment_is_safe(comment: str) -> bool:
    """A trust file's comment, shown by ``sdmesh operator list`` and in logs: bounded and
    printable. ``str.isprintable`` refuses the C0 and C1 controls (newlines, escapes that
    drive a terminal) and the format characters, among them the bidi overrides and isolates
    (U+202A-202E, U+2066-2069) that make a line read as something else."""
    return len(comment) <= MAX_COMMENT and comment.isprintable()


def trust_operator(directory: Path, key: PublicKey, role: Role, comment: str = "") -> Path:
    """Write ``NAME.toml`` for ``key`` (0644, root's); refuses a revoked key."""
    if any(c in comment for c in '"\\') or not comment_is_safe(comment):
        raise KeyFileError(f"a comment is one line of at most {MAX_COMMENT} characters, no quotes")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    if key.key_id in _read_revoked(directory / REVOKED_FILE):
        raise KeyFileError(
            f"key {key.key_id} is listed in {directory / REVOKED_FILE}: remove it there first"
        )
    path = directory / f"{key.name}{SUFFIX}"
    text = (
        f"# Trusted by this host: operator {key.name}, key id {key.key_id}.\n"
        f'name = "{key.name}"\n'
        f'public_key = "{key.text}"\n'
        f'role = "{role.label}"\n'
    )
    if comment:
        text += f'comment = "{comment}"\n'
    write_private(path, text.encode(), 0o644)
    return path


def revoke_operator(directory: Path, who: str) -> list[str]:
    """Revoke an operator by name or key id: its key id goes to ``revoked``, its file goes.
    The key ids revoked (empty when nothing matched)."""
    store = TrustStore.load(directory)
    key_ids = [
        key_id for key_id, operator in store.operators.items() if who in (key_id, operator.key.name)
    ]
    if not key_ids and len(who) == KEY_ID_HEX and all(c in "0123456789abcdef" for c in who):
        key_ids = [who]  # a key this host never trusted: keep it out anyway
    if not key_ids:
        return []
    revoked_path = directory / REVOKED_FILE
    existing = read_key_file(revoked_path, private=False).decode() if revoked_path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    added = "".join(f"{key_id}  # {who}\n" for key_id in key_ids if key_id not in store.revoked)
    write_private(revoked_path, (existing + added).encode(), 0o644)
    for key_id in key_ids:
        operator = store.operators.get(key_id)
        if operator is not None:
            Path(operator.source).unlink(missing_ok=True)
    return key_ids
