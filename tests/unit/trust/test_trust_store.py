"""The host's trust store: adding, revoking, and failing closed on anything unsafe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmesh.trust.keys import KeyFileError, OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import REVOKED_FILE, TrustStore, revoke_operator, trust_operator

from .helpers import trusted_dir

ROOT = os.geteuid() == 0


def test_trusted_operators_are_found_by_key_id(tmp_path: Path) -> None:
    alice, bob = OperatorKey.generate("alice"), OperatorKey.generate("bob")
    directory = trusted_dir(tmp_path, (alice, Role.OPERATE), (bob, Role.ADMIN))
    (directory / "README").write_text("not a .toml file: ignored\n")
    store = TrustStore.load(directory)
    assert store.problems == ()
    found = store.lookup(alice.public.key_id)
    assert found is not None and found.role is Role.OPERATE and found.key == alice.public
    assert store.lookup(bob.public.key_id) is not None
    assert store.lookup(OperatorKey.generate("carol").public.key_id) is None
    assert os.stat(directory / "alice.toml").st_mode & 0o777 == 0o644


def test_comments_are_kept_and_checked(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path)
    trust_operator(directory, alice.public, Role.READ, "on-call team")
    found = TrustStore.load(directory).lookup(alice.public.key_id)
    assert found is not None and found.comment == "on-call team"
    with pytest.raises(KeyFileError, match="comment"):
        trust_operator(directory, alice.public, Role.READ, 'x"\nrole = "admin')


def test_a_missing_directory_trusts_nobody(tmp_path: Path) -> None:
    store = TrustStore.load(tmp_path / "absent")
    assert store.operators == {} and "no operator is trusted" in store.problems[0]


def test_revoking_deletes_the_file_and_lists_the_key(tmp_path: Path) -> None:
    alice, bob = OperatorKey.generate("alice"), OperatorKey.generate("bob")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN), (bob, Role.OPERATE))
    assert revoke_operator(directory, "alice") == [alice.public.key_id]
    assert not (directory / "alice.toml").exists()
    store = TrustStore.load(directory)
    assert store.is_revoked(alice.public.key_id) and store.lookup(alice.public.key_id) is None
    assert store.lookup(bob.public.key_id) is not None
    # The file coming back (a backup, config management) does not trust it again.
    (directory / "alice.toml").write_text(
        f'name = "alice"\npublic_key = "{alice.public.text}"\nrole = "admin"\n'
    )
    assert TrustStore.load(directory).lookup(alice.public.key_id) is None
    with pytest.raises(KeyFileError, match="revoked"):
        trust_operator(directory, alice.public, Role.ADMIN)
    # By key id too, and for a key never trusted here; unknown names revoke nothing.
    assert revoke_operator(directory, bob.public.key_id) == [bob.public.key_id]
    assert revoke_operator(directory, "nobody") == []
    stranger = "0123456789abcdef" * 4  # a whole key id (64 hex digits)
    assert revoke_operator(directory, stranger) == [stranger]
    assert TrustStore.load(directory).is_revoked(stranger)
    # The short (64-bit) form of an id is not an id: it revokes nothing.
    assert revoke_operator(directory, "0123456789abcdef") == []


def test_the_revoked_file_takes_public_keys_and_comments(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    (directory / REVOKED_FILE).write_text(f"# left the team\n{alice.public.text}  # alice\n\n")
    assert TrustStore.load(directory).lookup(alice.public.key_id) is None


def test_a_bad_revoked_file_trusts_nobody(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    (directory / REVOKED_FILE).write_text("alice\n")
    store = TrustStore.load(directory)
    assert store.operators == {}
    assert f"{directory / REVOKED_FILE}:1" in store.problems[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role = [", "not a key file"),
        ('name = "alice"\npublic_key = "{key}"\n', "'role' is missing"),
        ('name = "alice"\npublic_key = "{key}"\nrole = "root"\n', "unknown role"),
        ('name = "alice"\npublic_key = "{key}"\nrole = "read"\nx = 1\n', "unknown setting"),
        ('name = "bob"\npublic_key = "{key}"\nrole = "read"\n', "name the file bob.toml"),
        ('name = "alice"\npublic_key = "ed25519:AAAA"\nrole = "read"\n', "32 bytes"),
    ],
)
def test_bad_operator_files_are_skipped_with_a_located_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    alice, bob = OperatorKey.generate("alice"), OperatorKey.generate("bob")
    directory = trusted_dir(tmp_path, (bob, Role.OPERATE))
    bad = directory / "alice.toml"
    bad.write_text(text.format(key=alice.public.text))
    os.chmod(bad, 0o644)
    store = TrustStore.load(directory)
    assert store.lookup(alice.public.key_id) is None
    assert store.lookup(bob.public.key_id) is not None  # the others still count
    assert len(store.problems) == 1
    assert str(bad) in store.problems[0] and message in store.problems[0]


def test_loose_operator_files_and_symlinks_are_skipped(tmp_path: Path) -> None:
    alice, bob = OperatorKey.generate("alice"), OperatorKey.generate("bob")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    os.chmod(directory / "alice.toml", 0o666)
    elsewhere = tmp_path / "bob.toml"
    trust_operator(tmp_path, bob.public, Role.ADMIN)
    (directory / "bob.toml").symlink_to(elsewhere)
    store = TrustStore.load(directory)
    assert store.operators == {}
    assert any("mode 0666" in p for p in store.problems)
    assert any("symbolic link" in p for p in store.problems)


def test_a_directory_others_can_write_trusts_nobody(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    os.chmod(directory, 0o777)
    store = TrustStore.load(directory)
    assert store.operators == {} and "mode 0777" in store.problems[0]


@pytest.mark.skipif(not ROOT, reason="changing a file's owner needs root")
def test_files_owned_by_someone_else_are_skipped(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    os.chown(directory / "alice.toml", 65534, 65534)
    store = TrustStore.load(directory)
    assert store.operators == {} and "owned by uid 65534" in store.problems[0]
    os.chown(directory / "alice.toml", 0, 0)
    os.chown(directory, 65534, 65534)
    assert TrustStore.load(directory).operators == {}


def test_one_key_in_two_files_gets_the_lower_role(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))
    copy = directory / "alice2.toml"
    copy.write_text(f'name = "alice2"\npublic_key = "{alice.public.text}"\nrole = "read"\n')
    os.chmod(copy, 0o644)
    store = TrustStore.load(directory)
    found = store.lookup(alice.public.key_id)
    assert found is not None and found.role is Role.READ
    assert "lower role" in store.problems[0]


def test_reloading_sees_changes(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path)
    assert TrustStore.load(directory).lookup(alice.public.key_id) is None
    trust_operator(directory, alice.public, Role.OPERATE)
    assert TrustStore.load(directory).lookup(alice.public.key_id) is not None
    (directory / "alice.toml").unlink()
    assert TrustStore.load(directory).lookup(alice.public.key_id) is None


def test_an_unreadable_store_trusts_nobody_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.ADMIN))

    def denied(_: object) -> list[str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "listdir", denied)  # as a user outside root's 0700 directory
    store = TrustStore.load(directory)
    assert store.operators == {}
    assert store.problems == (f"{directory}: Permission denied: no operator is trusted",)


def test_a_deeply_nested_trust_file_is_skipped_and_load_never_raises(tmp_path: Path) -> None:
    alice = OperatorKey.generate("alice")
    directory = trusted_dir(tmp_path, (alice, Role.OPERATE))
    (directory / "deep.toml").write_bytes(b"a = " + b"[" * 5000)  # tomllib: RecursionError
    store = TrustStore.load(directory)
    assert store.lookup(alice.public.key_id) is not None
    assert any("deep.toml: not a key file (nested too deeply)" in p for p in store.problems)
    # A revoked file the parser cannot take makes the host trust nobody, without raising.
    (directory / REVOKED_FILE).write_bytes(b"\xff\xfe")
    store = TrustStore.load(directory)
    assert store.operators == {} and store.problems


@pytest.mark.parametrize(
    "comment",
    ["line\\nbreak", "bell\\u0007", "c1 \\u009b31m", "evil\\u202eelif", "iso\\u2066x", "x" * 201],
)
def test_a_trust_files_comment_is_checked_on_load(tmp_path: Path, comment: str) -> None:
    """Comments reach `sdmesh operator list` and logs: no control or bidi characters."""
    alice = OperatorKey.generate("alice")
    directory = tmp_path / "operators.d"
    directory.mkdir()
    (directory / "alice.toml").write_text(
        f'name = "alice"\npublic_key = "{alice.public.text}"\nrole = "admin"\n'
        f'comment = "{comment}"\n'
    )
    store = TrustStore.load(directory)
    assert store.lookup(alice.public.key_id) is None
    assert any("'comment' must be one line" in p for p in store.problems)
    with pytest.raises(KeyFileError, match="a comment is one line"):
        trust_operator(
            directory, alice.public, Role.ADMIN, comment.encode().decode("unicode_escape")
        )
