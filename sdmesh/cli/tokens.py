"""``sdmesh token create|list|revoke``: the agent's API tokens, each with a name and a role.

The agent keeps only each token's digest (sdmesh/agent/api_tokens.py), so ``create`` prints
the secret once: store it then (``--out FILE`` writes it to a new 0600 file instead). Managing
tokens needs the ``admin`` role: root on the agent's socket, the default way in.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import click

from sdmesh.cli.client import call_or_exit
from sdmesh.cli.common import EXIT_BAD_INPUT
from sdmesh.cli.mesh import agent_option
from sdmesh.trust.roles import ROLE_NAMES


@click.group()
def token() -> None:
    """Create, list and revoke the agent's API tokens (admin; secrets are shown once).

    Tokens are for clients that cannot use the agent's socket: other hosts, the dashboard,
    scripts. Each carries a role: read (status, peers, events, metrics), operate (also pools of
    VMs and storage) or admin (also shell components, leave, force-leave, tokens, the DHT).
    """


@token.command()
@agent_option
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLE_NAMES, case_sensitive=False),
    default="read",
    show_default=True,
    help="What the token may do.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the secret to this new file (mode 0600) instead of printing it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the agent's answer as JSON.")
def create(agent: str, name: str, role: str, out: str | None, as_json: bool) -> None:
    """Make a token NAME with --role; its secret is printed once (or written to --out)."""
    answer = call_or_exit(agent, "POST", "/v1/tokens", {"name": name, "role": role.lower()})
    secret = str(answer.get("token", ""))
    if out is not None:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            click.echo(
                f"sdmesh: error: --out {out}: {error.strerror}; the token {name} was made but "
                f"not saved: revoke it (sdmesh token revoke {name}) and try again",
                err=True,
            )
            raise SystemExit(EXIT_BAD_INPUT) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        answer = {k: v for k, v in answer.items() if k != "token"}
    if as_json:
        click.echo(json.dumps(answer))
    elif out is not None:
        click.echo(f"token {name} ({role.lower()}) written to {out}")
    else:
        click.echo(secret)
        click.echo(
            f"token {name} ({role.lower()}): this is the only time it is shown; clients send "
            "it as --token-file FILE or SDMESH_TOKEN",
            err=True,
        )


@token.command("list")
@agent_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_tokens(agent: str, as_json: bool) -> None:
    """The tokens the agent accepts: name, role, when made (never the secrets)."""
    import time

    entries = call_or_exit(agent, "GET", "/v1/tokens")
    if as_json:
        click.echo(json.dumps(entries))
        return
    for entry in entries:
        made = float(entry.get("created") or 0)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(made)) if made else "(config)"
        click.echo(f"{entry['name']}\t{entry['role']}\t{when}")


@token.command()
@agent_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the agent's answer as JSON.")
def revoke(agent: str, name: str, as_json: bool) -> None:
    """Revoke the token NAME: the agent refuses it from now on."""
    answer = call_or_exit(agent, "DELETE", f"/v1/tokens/{quote(name, safe='')}")
    click.echo(json.dumps(answer) if as_json else f"token {name} revoked")


__all__ = ["token"]
