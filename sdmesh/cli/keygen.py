"""``sdmesh keygen``: create a cluster key file, or add, rotate and retire its keys.

Safe rotation with no downtime, one step at a time, each copied to every host (and the agents
reloaded) before the next: ``--add`` (everyone can open the new key), ``--use KEY_ID`` (everyone
seals with it), ``--remove OLD_ID``. ``--rotate`` does the first two at once, which is only safe
before the cluster is running or when every host gets the file at the same moment.
"""

from __future__ import annotations

import base64
import binascii
import sys

import click

from sdmesh.transport.keyring import (
    KEY_ID_SIZE,
    Keyring,
    KeyringError,
    decode_key,
    encode_key,
    generate_key,
    key_id,
    key_lines,
    write_key_file,
)

EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2


class _Failure(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@click.command("keygen", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", required=False, metavar="[FILE]")
@click.option("--force", is_flag=True, help="Overwrite FILE if it already exists.")
@click.option("--add", "add", is_flag=True, help="Append a fresh secondary key to FILE.")
@click.option(
    "--rotate",
    is_flag=True,
    help="Add a fresh key to FILE as the new primary, keeping the old keys for opening.",
)
@click.option(
    "--use", "use", metavar="KEY_ID", help="Make an installed key (hex id or base64) the primary."
)
@click.option("--remove", metavar="KEY_ID", help="Remove a secondary key (hex id or base64).")
@click.option(
    "--agent",
    metavar="URL",
    help="Do the --add, --use or --remove step on the running mesh, through this agent "
    "(admin): every live member applies it and saves its key file. With FILE, FILE too.",
)
@click.option(
    "--token",
    is_flag=True,
    help="Write a control API token instead (the agent's api-token-file, the CLI's "
    "--token-file), mode 0600.",
)
def keygen(
    file: str | None,
    force: bool,
    add: bool,
    rotate: bool,
    use: str | None,
    remove: str | None,
    agent: str | None,
    token: bool,
) -> None:
    """Write a new cluster key file: one base64-encoded 32-byte key per line.

    The first line is the primary key (it encrypts); every line decrypts. Without FILE, or
    with -, print a new key to standard output.

    \b
    Rotating keys without downtime (copy FILE to every host after each step):
      sdmesh keygen --add FILE          # prints the new KEY_ID
      sdmesh keygen --use KEY_ID FILE
      sdmesh keygen --remove OLD_ID FILE

    \b
    Or on the running mesh, one step at a time, through any agent (it tells every member):
      sdmesh keygen --add --agent URL       # prints the new KEY_ID
      sdmesh keygen --use KEY_ID --agent URL
      sdmesh keygen --remove OLD_ID --agent URL

    With --token, write a random API token to FILE (or print it) instead: the secret that
    clients not on the agent's host send to its control API.
    """
    edits = [name for name, given in (("--add", add), ("--rotate", rotate)) if given]
    edits += [name for name, value in (("--use", use), ("--remove", remove)) if value is not None]
    try:
        if token and edits:
            raise _Failure(f"error: --token and {edits[0]} cannot be combined", EXIT_BAD_INPUT)
        if len(edits) > 1:
            raise _Failure(f"error: {' and '.join(edits)} cannot be combined", EXIT_BAD_INPUT)
        if agent is not None:
            if len(edits) != 1 or rotate:
                raise _Failure(
                    "error: --agent needs exactly one of --add, --use, --remove", EXIT_BAD_INPUT
                )
            _on_mesh(agent, file, add=add, use=use, remove=remove)
            return
        if edits and file in (None, "-"):
            raise _Failure(f"error: {edits[0]} needs a key FILE to change", EXIT_BAD_INPUT)
        if edits and force:
            raise _Failure(f"error: --force does not apply to {edits[0]}", EXIT_BAD_INPUT)
        if token:
            _create_token(file, force=force)
        elif file in (None, "-"):
            click.echo(encode_key(generate_key()))
        elif not edits:
            _create(file, force=force)
        else:
            assert file is not None
            _edit(file, add=add, rotate=rotate, use=use, remove=remove)
    except _Failure as failure:
        click.echo(failure.message, err=True)
        sys.exit(failure.exit_code)


def _create(path: str, *, force: bool) -> None:
    key = generate_key()
    try:
        write_key_file(path, encode_key(key) + "\n", overwrite=force)
    except FileExistsError:
        raise _Failure(
            f"error: {path} already exists; pass --force to overwrite it "
            "(its keys are lost), or --add/--rotate to extend its key ring",
            EXIT_BAD_INPUT,
        ) from None
    except OSError as exc:
        raise _Failure(f"error: cannot write {path}: {exc.strerror or exc}", EXIT_RUNTIME) from exc
    click.echo(f"{path}: new key ring, primary key {key_id(key).hex()}", err=True)


def _create_token(path: str | None, *, force: bool) -> None:
    from sdmesh.agent.api_auth import new_token

    token = new_token()
    if path in (None, "-"):
        click.echo(token)
        return
    assert path is not None
    try:
        write_key_file(path, token + "\n", overwrite=force)
    except FileExistsError:
        raise _Failure(
            f"error: {path} already exists; pass --force to replace the token "
            "(clients holding the old one are refused)",
            EXIT_BAD_INPUT,
        ) from None
    except OSError as exc:
        raise _Failure(f"error: cannot write {path}: {exc.strerror or exc}", EXIT_RUNTIME) from exc
    click.echo(
        f"{path}: new API token; the agent reads it as api-token-file, clients as --token-file",
        err=True,
    )


def _on_mesh(
    agent: str, file: str | None, *, add: bool, use: str | None, remove: str | None
) -> None:
    """One rotation step on every live member, through ``agent``'s admin route."""
    from sdmesh.cli.client import AgentError, call

    if add:
        key = generate_key()
        body: dict[str, object] = {"op": "install", "key": encode_key(key)}
        shown = key_id(key).hex()
    else:
        wanted = (use if use is not None else remove) or ""
        shown = _key_id_text(wanted)
        body = {"op": "use" if use is not None else "remove", "key_id": shown}
    if file not in (None, "-"):
        assert file is not None
        if add:
            _edit(file, add=True, rotate=False, use=None, remove=None, new_key=key)
        else:
            _edit(file, add=False, rotate=False, use=use, remove=remove)
    try:
        answer = call(agent, "POST", "/v1/keyring", body, timeout=60)
    except AgentError as error:
        raise _Failure(f"error: {error.message}", error.exit_code) from None
    click.echo(f"{body['op']} {shown}: {answer.get('local')}")
    for name, outcome in sorted(dict(answer.get("members") or {}).items()):
        click.echo(f"  {name}: {outcome}")
    click.echo(f"keys now: {' '.join(answer.get('keys') or [])} (primary {answer.get('primary')})")
    if answer.get("failed"):
        raise _Failure(
            f"error: not done on {', '.join(answer['failed'])}: repeat the step (it is "
            "idempotent) or fix those hosts before the next one",
            EXIT_RUNTIME,
        )


def _key_id_text(text: str) -> str:
    """A key id in hex, from a hex id or a base64 key."""
    wanted = text.strip()
    if len(wanted) == 2 * KEY_ID_SIZE:
        try:
            bytes.fromhex(wanted)
            return wanted.lower()
        except ValueError:
            pass
    try:
        return key_id(decode_key(wanted)).hex()
    except ValueError:
        raise _Failure(
            f"error: {wanted!r} is neither a key id (8 hex digits) nor a key", EXIT_BAD_INPUT
        ) from None


def _edit(
    path: str,
    *,
    add: bool,
    rotate: bool,
    use: str | None,
    remove: str | None,
    new_key: bytes | None = None,
) -> None:
    """Change the ring in place, keeping the file's comments and layout."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        ring = Keyring.parse(text, source=path)
    except KeyringError as exc:
        raise _Failure(exc.message, EXIT_BAD_INPUT) from exc
    except UnicodeDecodeError as exc:
        raise _Failure(f"{path}: error: not a text file ({exc.reason})", EXIT_BAD_INPUT) from exc
    except FileNotFoundError:
        raise _Failure(
            f"error: {path} does not exist; create it with `sdmesh keygen {path}`",
            EXIT_BAD_INPUT,
        ) from None
    except OSError as exc:
        raise _Failure(f"error: cannot read {path}: {exc.strerror or exc}", EXIT_RUNTIME) from exc

    lines = text.splitlines()
    try:
        if add or rotate:
            key = new_key or generate_key()
            ring.install(key)
            if rotate:
                ring.use(key)
                lines.insert(key_lines(text)[0], encode_key(key))
                done = f"added key {key_id(key).hex()} as the primary"
            else:
                lines.append(encode_key(key))
                done = f"added key {key_id(key).hex()} as a secondary"
        elif use is not None:
            key = _find(ring, use)
            ring.use(key)
            index = _line_of(lines, key)
            lines.insert(key_lines(text)[0], lines.pop(index))
            done = f"key {key_id(key).hex()} is now the primary"
        else:
            assert remove is not None
            key = _find(ring, remove)
            ring.remove(key)
            del lines[_line_of(lines, key)]
            done = f"removed key {key_id(key).hex()}"
    except KeyringError as exc:
        raise _Failure(f"{path}: error: {exc.message}", EXIT_BAD_INPUT) from exc

    new_text = "\n".join(lines) + "\n"
    if Keyring.parse(new_text, source=path).keys != ring.keys:  # cannot happen; never write it
        raise _Failure(f"error: internal error editing {path}; nothing written", EXIT_RUNTIME)
    try:
        write_key_file(path, new_text, overwrite=True)
    except OSError as exc:
        raise _Failure(f"error: cannot write {path}: {exc.strerror or exc}", EXIT_RUNTIME) from exc
    ids = " ".join(key_id(k).hex() + ("*" if k == ring.primary else "") for k in ring)
    click.echo(f"{path}: {done}; keys now: {ids} (* = primary)", err=True)


def _find(ring: Keyring, text: str) -> bytes:
    """An installed key named by its hex id or by the key itself in base64."""
    wanted = text.strip()
    key: bytes | None = None
    if len(wanted) == 2 * KEY_ID_SIZE:
        try:
            key = ring.find(bytes.fromhex(wanted))
        except ValueError:
            key = None
    else:
        try:
            key = decode_key(wanted)
        except ValueError:
            key = None
        if key is not None and key not in ring:
            key = None
    if key is None:
        installed = ", ".join(key_id(k).hex() for k in ring)
        raise KeyringError(f"no installed key matches {wanted!r} (installed: {installed})")
    return key


def _line_of(lines: list[str], key: bytes) -> int:
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            try:
                if base64.b64decode(stripped, validate=True) == key:
                    return index
            except (binascii.Error, ValueError):
                continue
    raise KeyringError(f"key {key_id(key).hex()} not found in the file")  # parse said it was


if __name__ == "__main__":  # pragma: no cover - `python -m sdmesh.cli.keygen` until wired in
    keygen()
