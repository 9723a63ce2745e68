"""``sdmesh join``, ``sdmesh peers``, ``sdmesh leave`` and ``sdmesh force-leave``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sdmesh.agent.config import ConfigError, load_config
from sdmesh.cli.agent_client import connection_options
from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.cli.logs import FORMATS, LEVELS, setup_logging
from sdmesh.transport import KeyringError, load_security, permission_warning

F = TypeVar("F", bound=Callable[..., Any])


def _check_agent_url(_: click.Context, __: click.Parameter, url: str) -> str:
    """``--agent`` must be ``unix:/PATH`` or an http(s) URL with a host: anything else is the
    user's typo (exit 2), not an agent that cannot be reached."""
    from urllib.parse import urlsplit

    from sdmesh.cli.transport import is_unix, unix_path

    if is_unix(url):
        if not unix_path(url).startswith("/"):
            raise click.BadParameter(f"{url!r}: expected unix:/ABSOLUTE/PATH of the socket")
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r}: expected http://HOST:PORT or https://HOST:PORT")
    return url


def _default_agent() -> str:
    from sdmesh.cli.transport import default_agent

    return default_agent()


_agent_url_option = click.option(
    "--agent",
    envvar="SDMESH_AGENT",
    default=_default_agent,
    show_default="this host's agent socket, unix:/var/lib/sdmesh/api.sock",
    metavar="URL",
    callback=_check_agent_url,
    help="The agent to talk to: unix:/PATH (its socket: root and the group sdmesh), "
    "http:// or https:// with a token (also SDMESH_AGENT).",
)


def agent_option(function: F) -> F:
    """``--agent URL``, and ``--token``/``--token-file``/``--ca`` to reach a secured agent
    (sdmesh/cli/agent_client.py; requests made through ``open_agent`` use them)."""
    return _agent_url_option(connection_options(function))


@click.command()
@click.option(
    "--config",
    "config_file",
    envvar="SDMESH_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the settings below (flags and SDMESH_* variables override it; "
    "also SDMESH_CONFIG, which the CLI reads to find a local agent's api-token-file).",
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
@click.option(
    "--api",
    metavar="HOST:PORT",
    help="Control API over TCP, tokens only [127.0.0.1:7948]; local control is the socket "
    "<state-dir>/api.sock (api-socket).",
)
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False),
    help="File holding an admin API token for TCP clients (sdmesh keygen --token); "
    "'sdmesh token create' makes tokens with roles.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Serve the API over HTTPS: PEM.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="The --tls-cert's key (PEM).")
@click.option(
    "--api-insecure",
    is_flag=True,
    default=None,
    help="Serve a non-loopback --api without TLS, and to anyone if no token exists "
    "(trusted networks only).",
)
@click.option("--name", help="Member name [the host name].")
@click.option(
    "--witness",
    is_flag=True,
    default=None,
    help="Join as a witness: vote and hold leases, run no VM (two hosts + a witness fail "
    "over safely; docs/ha.md).",
)
@click.option(
    "--label", "labels", multiple=True, help="A label placement can ask for (repeatable)."
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    envvar="SDMESH_LOG_LEVEL",
    help="Log this level and up [warning, and the agent's start-up and membership lines].",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS, case_sensitive=False),
    envvar="SDMESH_LOG_FORMAT",
    default="auto",
    show_default=True,
    help="journal: no timestamps, <N> syslog priorities (auto picks it when stderr is the "
    "journal); text: timestamped lines; json: one object per line for log shippers.",
)
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level info.")
def join(
    config_file: Path | None,
    verbose: bool,
    log_level: str | None,
    log_format: str,
    **flags: Any,
) -> None:
    """Run this host's agent in the foreground (a systemd service).

    Joins the mesh through any listed peer, serves the control API, and manages this host's
    share of every pool. SIGINT, SIGTERM or 'sdmesh leave' make it leave the mesh gracefully.
    Refuses to start without a cluster key unless --insecure is given, and with an --api
    other hosts can reach but no TLS unless --api-insecure is given. Local control is the
    Unix socket <state-dir>/api.sock (root and the group sdmesh).

    Logs go to stderr; under systemd they are journal lines (journalctl -p warning works).
    """
    from sdmesh.agent.agent import Agent
    from sdmesh.agent.api_auth import load_api_security

    setup_logging(log_format.lower(), log_level or ("info" if verbose else None))
    # From here on, everything the agent says goes through logging, in the chosen format (a
    # line that is not JSON would break a log shipper's parser).
    log = logging.getLogger("sdmesh.join")
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        config = load_config(config_file, overrides)
        security = load_security(config.key_file, insecure=config.insecure, cluster=config.cluster)
        api_security = load_api_security(config)  # refuse an exposed, unprotected API now
    except ConfigError as error:
        log.error("%s", error)
        sys.exit(EXIT_BAD_INPUT)
    except KeyringError as error:
        log.error("%s", error.message)
        sys.exit(EXIT_BAD_INPUT)
    if config.key_file:
        warning = permission_warning(config.key_file)
        if warning:
            log.warning("%s", warning)
    if config.insecure:
        log.warning("--insecure: gossip is neither encrypted nor authenticated")
    for warning in api_security.warnings:
        log.warning("%s", warning)
    try:
        asyncio.run(Agent(config, security).run())
    except ConfigError as error:  # the control socket's place, the token store
        log.error("%s", error)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        log.error("%s (is the port in use?)", error.strerror or error)
        sys.exit(EXIT_FAILURE)
    except Exception as error:  # a hypervisor that cannot be opened...: one record, exit 1
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)  # --log-level debug: traceback
        log.critical("agent stopped: %s: %s", type(error).__name__, error, exc_info=debug)
        sys.exit(EXIT_FAILURE)


@click.command()
@agent_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def peers(agent: str, as_json: bool) -> None:
    """Members as this agent sees them: name, address, state, incarnation, capacity, labels."""
    from sdmesh.cli.client import call_or_exit  # here: 'sdmesh join' shares this module

    members = call_or_exit(agent, "GET", "/v1/peers", timeout=10)
    if as_json:
        click.echo(json.dumps(members))
        return
    # Here, not at the top: the module also holds ``sdmesh join``, which never prints tables.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("name", "address", "state", "incarnation", "vcpus", "memory", "labels"):
        table.add_column(column)
    for member in members:
        meta = member.get("meta") or {}
        capacity = meta.get("capacity") or {}
        memory = capacity.get("memory_mib")
        cells = (
            member["name"],
            member["address"],
            member["state"],
            member["incarnation"],
            capacity.get("vcpus", ""),
            f"{memory // 1024} GiB" if isinstance(memory, int) else "",
            ",".join(str(label) for label in meta.get("labels") or []),
        )
        # Text, not str: names and labels come from members, and are never rich markup.
        table.add_row(*(Text(str(cell)) for cell in cells))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@click.command()
@agent_option
@click.option("--json", "as_json", is_flag=True, help="Print the agent's answer as JSON.")
def leave(agent: str, as_json: bool) -> None:
    """Ask the agent to leave the mesh gracefully (it announces it, then exits)."""
    from sdmesh.cli.client import call_or_exit  # here: 'sdmesh join' shares this module

    answer = call_or_exit(agent, "POST", "/v1/leave", timeout=10)
    click.echo(json.dumps(answer) if as_json else f"{agent}: leaving")


@click.command("force-leave")
@agent_option
@click.argument("node")
@click.option("--json", "as_json", is_flag=True, help="Print the agent's answer as JSON.")
def force_leave(agent: str, node: str, as_json: bool) -> None:
    """Force a failed member out of the mesh: a host that is gone for good.

    Pools are shepherded only while a majority of the members that have not left is alive,
    and a dead member counts until it is forgotten, a day later. This makes every member
    count NODE as left now. Only a failed (dead) member can be forced out: an alive or
    suspected one is refused, as is a name the agent does not know (exit 2). A member that
    is alive after all (cut off, not dead) rejoins as soon as it hears of it.
    """
    from urllib.parse import quote

    from sdmesh.cli.client import call_or_exit  # here: 'sdmesh join' shares this module

    answer = call_or_exit(agent, "POST", f"/v1/peers/{quote(node, safe='')}/force-leave")
    if as_json:
        click.echo(json.dumps(answer))
    elif isinstance(answer, dict) and answer.get("outcome") == "already-left":
        click.echo(f"{node} had already left; nothing to do")
    else:
        click.echo(f"{node}: forced out; every member will count it as left")


__all__ = ["force_leave", "join", "leave", "peers"]
