"""``sdmesh ca``: the cluster CA that gives each host its identity, and takes it back.

On the operator's machine, once: ``sdmesh ca init DIR`` (``ca.key`` 0600 stays there;
``ca.pub`` goes to every host as ``identity-ca``). On each host: ``sdmesh ca request --name b
DIR`` makes the host's key pair; its ``b.pub`` goes to the operator, who runs ``sdmesh ca sign
--ca DIR b.pub`` and copies ``b.cert`` back. ``sdmesh ca revoke --ca DIR b --agent URL``
revokes every certificate issued to b, adds it to ``DIR/revoked.crl`` and tells the running
mesh (docs/security.md, "Host identity, enrolment and revocation").
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.safeio import read_private, write_private

CA_NAME = "cluster-ca"
ISSUED = "issued"
CRL = "revoked.crl"
DEFAULT_DAYS = 365


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"sdmesh: error: {message}", err=True)
    sys.exit(code)


@click.group("ca", context_settings={"help_option_names": ["-h", "--help"]})
def ca() -> None:
    """The cluster CA: host identities, their certificates and revocations."""


@ca.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Create a CA in DIRECTORY (mode 0700): ca.key (keep it there) and ca.pub (give it to
    every host as identity-ca)."""
    from sdmesh.trust.keys import KeyFileError, OperatorKey, write_key_pair

    if (directory / "ca.key").exists() or (directory / "ca.key").is_symlink():
        _fail(f"{directory}/ca.key already exists: a second CA would orphan every certificate")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key = OperatorKey.generate(CA_NAME)
        private, public = write_key_pair(key, directory)
        private.rename(directory / "ca.key")
        public.rename(directory / "ca.pub")
    except KeyFileError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{directory}: {error.strerror}", EXIT_FAILURE)
    click.echo(f"{directory}/ca.pub: the CA's public key (id {key.public.key_id}); copy it to")
    click.echo("every host and set identity-ca to it. ca.key never leaves this directory.")


@ca.command("request")
@click.option("--name", required=True, help="The host's member name (sdmesh join --name).")
@click.argument("directory", type=click.Path(path_type=Path))
def request(name: str, directory: Path) -> None:
    """Make this host's key pair in DIRECTORY: host.key (0600) and NAME.pub, which the
    operator signs with 'sdmesh ca sign'."""
    from sdmesh.trust.keys import KeyFileError, OperatorKey, write_key_pair

    if (directory / "host.key").exists() or (directory / "host.key").is_symlink():
        _fail(f"{directory}/host.key already exists")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = OperatorKey.generate(name)
        private, public = write_key_pair(key, directory)
        private.rename(directory / "host.key")
    except KeyFileError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{directory}: {error.strerror}", EXIT_FAILURE)
    click.echo(f"{public}: send it to the operator (sdmesh ca sign --ca DIR {public.name});")
    click.echo(f"put the certificate back as {directory}/host.cert.")


@ca.command("sign")
@click.option("--ca", "ca_dir", required=True, type=click.Path(path_type=Path))
@click.option("--name", help="The member name to certify (default: the key file's name).")
@click.option("--days", default=DEFAULT_DAYS, show_default=True, type=click.IntRange(1, 3650))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Default: NAME.cert.")
@click.argument("public_key", type=click.Path(path_type=Path))
def sign(ca_dir: Path, name: str | None, days: int, output: Path | None, public_key: Path) -> None:
    """Certify that the host holding PUBLIC_KEY is member NAME, for DAYS days."""
    from sdmesh.trust.identity import IdentityError, sign_certificate
    from sdmesh.trust.keys import KeyFileError, load_private_key, load_public_key

    try:
        ca_key = load_private_key(ca_dir / "ca.key")
        host = load_public_key(public_key)
        name = name or host.name
        issued = _issued(ca_dir)
        serial = max((s for s, _ in issued), default=0) + 1
        now = int(time.time())
        cert = sign_certificate(ca_key, name, host, serial, now - 300, now + days * 86400)
        target = output or Path(f"{name}.cert")
        write_private(target, cert.file_text().encode(), 0o644)
        lines = "".join(f"{s} {n}\n" for s, n in [*issued, (serial, name)])
        write_private(ca_dir / ISSUED, lines.encode(), 0o600)
    except (KeyFileError, IdentityError) as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.filename or ca_dir}: {error.strerror}", EXIT_FAILURE)
    click.echo(f"{target}: certificate of {name}, serial {serial}, valid {days} days")


@ca.command("revoke")
@click.option("--ca", "ca_dir", required=True, type=click.Path(path_type=Path))
@click.option("--agent", help="Tell this running agent (it gossips the revocation).")
@click.option("--json", "as_json", is_flag=True)
@click.argument("who")
def revoke(ca_dir: Path, agent: str | None, as_json: bool, who: str) -> None:
    """Revoke every certificate issued to host WHO (or the one of serial WHO)."""
    from sdmesh.trust.identity import (
        IdentityError,
        load_revocations,
        revocation_line,
        sign_revocation,
    )
    from sdmesh.trust.keys import KeyFileError, load_private_key

    try:
        ca_key = load_private_key(ca_dir / "ca.key")
        issued = _issued(ca_dir)
        already = {r.serial for r in load_revocations(ca_dir / CRL)}
    except (KeyFileError, IdentityError) as error:
        _fail(str(error))
        return
    targets = [(s, n) for s, n in issued if n == who or str(s) == who]
    if not targets:
        _fail(f"no certificate issued to {who!r} (see {ca_dir / ISSUED})")
    now = int(time.time())
    made = [sign_revocation(ca_key, s, n, now) for s, n in targets if s not in already]
    old = read_private(ca_dir / CRL) or b""
    new = old + "".join(revocation_line(r) for r in made).encode()
    try:
        write_private(ca_dir / CRL, new, 0o644)
    except OSError as error:
        _fail(f"{ca_dir / CRL}: {error.strerror}", EXIT_FAILURE)
    every = [sign_revocation(ca_key, s, n, now) for s, n in targets]
    told: list[int] = []
    if agent is not None:
        from sdmesh.cli.client import AgentError, call

        for revocation in every:
            text = revocation_line(revocation).strip()
            try:
                call(agent, "POST", "/v1/identity/revocations", {"revocation": text})
            except AgentError as error:
                _fail(f"{agent}: {error.message}", error.exit_code)
            told.append(revocation.serial)
    serials = [s for s, _ in targets]
    if as_json:
        click.echo(json.dumps({"revoked": serials, "crl": str(ca_dir / CRL), "told": told}))
    else:
        click.echo(f"revoked serial(s) {', '.join(map(str, serials))} of {targets[0][1]}; ")
        click.echo(
            f"{ca_dir / CRL} updated"
            + (", and the mesh told" if told else " (copy it to the hosts as identity-crl)")
        )


def _issued(ca_dir: Path) -> list[tuple[int, str]]:
    data = read_private(ca_dir / ISSUED) or b""
    found: list[tuple[int, str]] = []
    for line in data.decode(errors="replace").splitlines():
        serial, _, name = line.partition(" ")
        if serial.isdigit() and name:
            found.append((int(serial), name.strip()))
    return found
