"""``sdmesh operator``: operator signing keys, and the host's trust store of them.

An operator runs ``sdmesh operator keygen NAME`` once (``NAME.key``, 0600, and ``NAME.pub``
under ``~/.config/sdmesh``); each host's administrator runs ``sdmesh operator trust NAME.pub
--role operate`` (or ``admin`` for shell components) to trust it, and ``sdmesh operator revoke
NAME`` to stop. ``sdmesh submit`` signs with the key ``--key``, ``SDMESH_OPERATOR_KEY`` or the
only ``*.key`` in ``~/.config/sdmesh`` names (docs/security.md, "Operator-signed
descriptors").
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.trust import DEFAULT_OPERATORS_DIR
from sdmesh.trust.roles import ROLE_NAMES, Role

if TYPE_CHECKING:  # cryptography is loaded only by the commands that sign or read keys
    from sdmesh.trust.keys import OperatorKey

F = TypeVar("F", bound=Callable[..., Any])
KEY_ENV = "SDMESH_OPERATOR_KEY"


def config_dir() -> Path:
    """Where an operator's own keys live: ``$XDG_CONFIG_HOME/sdmesh`` or ``~/.config/sdmesh``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sdmesh"


def find_key_file(given: str | None) -> Path | None:
    """``--key``, else ``SDMESH_OPERATOR_KEY``, else the only ``*.key`` in the config dir."""
    if given:
        return Path(given)
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return Path(from_env)
    try:
        found = sorted(config_dir().glob("*.key"))
    except OSError:
        return None
    return found[0] if len(found) == 1 else None


def load_signing_key(given: str | None) -> OperatorKey | None:
    """The operator key ``submit`` signs with, or None (unsigned); exit 2 on a bad key file."""
    from sdmesh.trust.keys import KeyFileError, load_private_key

    path = find_key_file(given)
    if path is None:
        return None
    try:
        return load_private_key(path)
    except KeyFileError as error:
        click.echo(f"sdmesh: error: operator key: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def key_option(function: F) -> F:
    """``--key FILE`` (also ``SDMESH_OPERATOR_KEY``)."""
    return click.option(
        "--key",
        "key_file",
        metavar="FILE",
        help=f"Operator key to sign with (also {KEY_ENV}) [the only *.key in "
        "~/.config/sdmesh]. Hosts run only pools signed by keys they trust.",
    )(function)


def _dir_option(function: F) -> F:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path),
        default=DEFAULT_OPERATORS_DIR,
        show_default=True,
        help="The host's trust store.",
    )(function)


@click.group("operator", context_settings={"help_option_names": ["-h", "--help"]})
def operator() -> None:
    """Operator signing keys, and the operators this host trusts."""


@operator.command("keygen")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write NAME.key and NAME.pub [~/.config/sdmesh].",
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen(name: str, directory: Path | None, force: bool) -> None:
    """Create an operator key pair: NAME.key (private, 0600) and NAME.pub."""
    from sdmesh.trust.keys import KeyFileError, OperatorKey, write_key_pair

    target = directory if directory is not None else config_dir()
    try:
        key = OperatorKey.generate(name)
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_path, public_path = write_key_pair(key, target, force=force)
    except KeyFileError as error:
        click.echo(f"sdmesh: error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        click.echo(f"sdmesh: error: {target}: {error.strerror}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(f"private key: {private_path} (keep it secret)")
    click.echo(f"public key:  {public_path} (key id {key.public.key_id})")
    click.echo(f"on each host: sdmesh operator trust {public_path.name} --role operate")


@operator.command("trust")
@click.argument("public_key_file", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--role", type=click.Choice(ROLE_NAMES), required=True, help="What it may sign.")
@click.option("--comment", default="", help="A note kept with the key.")
@_dir_option
def trust(public_key_file: Path, role: str, comment: str, directory: Path) -> None:
    """Trust an operator's public key (NAME.pub) on this host, with a role.

    Agents read the trust store at start and on reload; shell components need admin, VMs
    and storage operate.
    """
    from sdmesh.trust.keys import KeyFileError, load_public_key
    from sdmesh.trust.store import trust_operator

    try:
        key = load_public_key(public_key_file)
        path = trust_operator(directory, key, Role.parse(role), comment)
    except KeyFileError as error:
        click.echo(f"sdmesh: error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        click.echo(f"sdmesh: error: {directory}: {error.strerror}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(f"trusted {key.name} (key id {key.key_id}) as {role}: {path}")


@operator.command("revoke")
@click.argument("who", metavar="NAME|KEY_ID")
@_dir_option
def revoke(who: str, directory: Path) -> None:
    """Stop trusting an operator: its file goes, its key id is listed in 'revoked'."""
    from sdmesh.trust.keys import KeyFileError
    from sdmesh.trust.store import revoke_operator

    try:
        revoked = revoke_operator(directory, who)
    except KeyFileError as error:
        click.echo(f"sdmesh: error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        click.echo(f"sdmesh: error: {directory}: {error.strerror}", err=True)
        sys.exit(EXIT_FAILURE)
    if not revoked:
        click.echo(f"sdmesh: error: no trusted operator or key id {who!r}", err=True)
        sys.exit(EXIT_FAILURE)
    for key_id in revoked:
        click.echo(f"revoked key {key_id}")


@operator.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def list_operators(as_json: bool, directory: Path) -> None:
    """The operators this host trusts, and what is wrong in its trust store."""
    from sdmesh.trust.store import TrustStore

    store = TrustStore.load(directory)
    if as_json:
        listed = [
            {
                "name": trusted.key.name,
                "key_id": key_id,
                "role": trusted.role.label,
                "comment": trusted.comment,
            }
            for key_id, trusted in sorted(store.operators.items())
        ]
        revoked = sorted(store.revoked)
        click.echo(
            json.dumps({"operators": listed, "revoked": revoked, "problems": store.problems})
        )
        return
    for key_id, trusted in sorted(store.operators.items(), key=lambda item: item[1].key.name):
        note = f"  # {trusted.comment}" if trusted.comment else ""
        click.echo(f"{trusted.key.name:<20} {trusted.role.label:<8} {key_id}{note}")
    for problem in store.problems:
        click.echo(f"sdmesh: warning: {problem}", err=True)
    if not store.operators:
        click.echo("no operator is trusted: this host runs no pool", err=True)
