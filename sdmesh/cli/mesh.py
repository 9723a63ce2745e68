"""``sdmesh join``, ``sdmesh peers`` and ``sdmesh leave``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from sdmesh.agent.config import ConfigError, load_config
from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.transport import KeyringError, load_security, permission_warning

DEFAULT_AGENT = "http://127.0.0.1:7948"

agent_option = click.option(
    "--agent",
    envvar="SDMESH_AGENT",
    default=DEFAULT_AGENT,
    show_default=True,
    metavar="URL",
    help="The agent to talk to (also SDMESH_AGENT).",
)


def call_agent(agent: str, method: str, path: str) -> Any:
    """One request to an agent's control API; exits 1 with a clear message if unreachable."""
    # Here, not at the top: ``sdmesh join`` (same module) never calls an agent, and
    # urllib.request brings http.client and email.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(agent.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        click.echo(f"sdmesh: error: agent {agent} answered {error.code}: {error.reason}", err=True)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        click.echo(
            f"sdmesh: error: cannot reach the agent at {agent} ({reason}); is 'sdmesh join' "
            "running there? (--agent URL or SDMESH_AGENT picks another)",
            err=True,
        )
    sys.exit(EXIT_FAILURE)


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the settings below (flags and SDMESH_* variables override it).",
)
@click.option("--bind", metavar="HOST:PORT", help="Gossip address, UDP and TCP [0.0.0.0:7946].")
@click.option(
    "--advertise", metavar="HOST:PORT", help="Address others reach us at (default: from --bind)."
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    help="A member to join through (repeatable).",
)
@click.option(
    "--key-file", type=click.Path(dir_okay=False), help="Cluster key file (sdmesh keygen)."
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Run without encryption or authentication (tests only).",
)
@click.option(
    "--hypervisor",
    metavar="URI",
    help="libvirt URI of this host ['test': embedded simulated host].",
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Agent state [/var/lib/sdmesh]."
)
@click.option("--api", metavar="HOST:PORT", help="Control API address [127.0.0.1:7948].")
@click.option("--name", help="Member name [the host name].")
@click.option(
    "--label", "labels", multiple=True, help="A label placement can ask for (repeatable)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every membership change.")
def join(config_file: Path | None, verbose: bool, **flags: Any) -> None:
    """Run this host's agent in the foreground (a systemd service).

    Joins the mesh through any listed peer, serves the control API, and manages this host's
    share of every pool. SIGINT, SIGTERM or 'sdmesh leave' make it leave the mesh gracefully.
    Refuses to start without a cluster key unless --insecure is given.
    """
    from sdmesh.agent.agent import Agent

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("sdmesh.agent.agent").setLevel(logging.INFO)
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        config = load_config(config_file, overrides)
        security = load_security(config.key_file, insecure=config.insecure, cluster=config.cluster)
    except ConfigError as error:
        click.echo(f"sdmesh: error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyringError as error:
        click.echo(f"sdmesh: {error.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if config.key_file:
        warning = permission_warning(config.key_file)
        if warning:
            click.echo(f"sdmesh: warning: {warning}", err=True)
    if config.insecure:
        click.echo(
            "sdmesh: warning: --insecure: gossip is neither encrypted nor authenticated", err=True
        )
    try:
        asyncio.run(Agent(config, security).run())
    except OSError as error:
        click.echo(f"sdmesh: error: {error.strerror or error} (is the port in use?)", err=True)
        sys.exit(EXIT_FAILURE)


@click.command()
@agent_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def peers(agent: str, as_json: bool) -> None:
    """Members as this agent sees them: name, address, state, incarnation, capacity, labels."""
    members = call_agent(agent, "GET", "/v1/peers")
    if as_json:
        click.echo(json.dumps(members))
        return
    # Here, not at the top: the module also holds ``sdmesh join``, which never prints tables.
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("name", "address", "state", "incarnation", "vcpus", "memory", "labels"):
        table.add_column(column)
    for member in members:
        meta = member.get("meta") or {}
        capacity = meta.get("capacity") or {}
        memory = capacity.get("memory_mib")
        table.add_row(
            member["name"],
            member["address"],
            member["state"],
            str(member["incarnation"]),
            str(capacity.get("vcpus", "")),
            f"{memory // 1024} GiB" if isinstance(memory, int) else "",
            ",".join(meta.get("labels") or []),
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@click.command()
@agent_option
def leave(agent: str) -> None:
    """Ask the agent to leave the mesh gracefully (it announces it, then exits)."""
    call_agent(agent, "POST", "/v1/leave")
    click.echo(f"{agent}: leaving")


__all__ = ["join", "leave", "peers"]
