"""``sdmesh submit``, ``sdmesh status`` and ``sdmesh terminate``: pools, through any agent."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from sdmesh.cli.client import AgentError, call, call_or_exit
from sdmesh.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    descriptor_options,
    print_diagnostics,
)
from sdmesh.cli.follow import PoolView, components_table, follow, output_mode, pool_path
from sdmesh.cli.mesh import agent_option
from sdmesh.cli.operator import key_option, load_signing_key
from sdmesh.cli.transport import default_agent

FINAL_STATES = ("running", "failed", "terminated")


def check_pool(_: click.Context, __: click.Parameter, pool: str | None) -> str | None:
    """A POOL argument must be a pool id (exit 2 otherwise), checked here: sent as is, a
    name with ``/`` or ``?`` would ask the agent for something else entirely."""
    from sdmesh.pools.records import check_pool_id

    if pool is not None:
        try:
            check_pool_id(pool)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return pool


def complete_pool(context: click.Context, _: click.Parameter, incomplete: str) -> list[Any]:
    """Pool names for shell completion, from the agent (--agent, SDMESH_AGENT or the
    default): a short timeout, and nothing at all if it does not answer."""
    agent = context.params.get("agent") or os.environ.get("SDMESH_AGENT") or default_agent()
    try:
        pools = call(str(agent), "GET", "/v1/pools", timeout=1.0)
        names = [str(item["pool"]) for item in pools]
    except (AgentError, KeyError, TypeError):
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


@click.command()
@click.argument("file", metavar="FILE", type=click.Path(allow_dash=True))
@click.option(
    "--name",
    "pool_name",
    metavar="POOL",
    callback=check_pool,
    help="Pool id [FILE's name + random].",
)
@click.option("--wait", is_flag=True, help="Follow the pool until it runs or fails.")
@click.option("--dry-run", is_flag=True, help="Print the placement; create nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (event lines with --wait).")
@descriptor_options
@key_option
@agent_option
def submit(
    file: str,
    pool_name: str | None,
    wait: bool,
    dry_run: bool,
    as_json: bool,
    include_dirs: tuple[Path, ...],
    defines: tuple[str, ...],
    key_file: str | None,
    agent: str,
) -> None:
    """Hand a descriptor to the agent; any agent bootstraps the pool across the mesh.

    The descriptor is resolved here (its #include files are read here), then sent resolved,
    signed with your operator key (--key). Prints the pool id.
    """
    from sdmesh.cli.language import load
    from sdmesh.language import DescriptorError
    from sdmesh.pools.submission import request_body

    try:
        resolved = load(file, include_dirs, defines)
    except DescriptorError as error:
        print_diagnostics(error.diagnostics)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        click.echo(f"sdmesh: error: {file}: {error.strerror or error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    print_diagnostics(resolved.warnings)
    body = request_body(resolved, pool_name, dry_run=dry_run)
    key = load_signing_key(key_file)
    if key is not None:
        from sdmesh.pools.signing import sign_request

        sign_request(body, resolved, key, time.time())
    _check_size(body)
    answer = call_or_exit(agent, "POST", "/v1/pools", body)
    if dry_run:
        _print_plan(answer, as_json)
        sys.exit(EXIT_FAILURE if answer.get("unplaced") else 0)
    pool = str(answer["pool"])
    if as_json and not wait:
        click.echo(json.dumps(answer))
    elif not as_json:
        click.echo(pool)
    if wait:
        view = PoolView(pool, output_mode(as_json, sys.stdout), goal="running")
        final = follow(agent, pool, FINAL_STATES, view)
        if final["state"] != "running":
            if as_json:  # the other modes said it on stdout
                reason = f": {final['reason']}" if final.get("reason") else ""
                click.echo(f"sdmesh: error: pool {pool} {final['state']}{reason}", err=True)
            sys.exit(EXIT_FAILURE)


def _check_size(body: dict[str, object]) -> None:
    """Refuse here what the agent would refuse with 413: the resolved descriptor is larger
    than its API accepts (exit 2, with the sizes)."""
    from sdmesh.agent.api_input import MAX_REQUEST_BYTES

    size = len(json.dumps(body).encode())
    if size > MAX_REQUEST_BYTES:
        click.echo(
            f"sdmesh: error: the resolved descriptor makes a {size / 2**20:.1f} MiB request; "
            f"agents accept up to {MAX_REQUEST_BYTES // 2**20} MiB: split the pool into "
            "smaller ones",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)


def _print_plan(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"pool {answer['pool']} (shepherd {answer['shepherd']}), placement:")
    for item in answer["placement"]:
        host = item["host"] or "-"
        click.echo(f"  {item['path']:<50} {host:<16} {item['vcpus']} vCPU {item['memory_mib']} MiB")
    for item in answer["unplaced"]:
        click.echo(f"  cannot place {item['path']}: {item['reason']}", err=True)


@click.command()
@click.argument("pool", required=False, shell_complete=complete_pool, callback=check_pool)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@agent_option
def status(pool: str | None, as_json: bool, agent: str) -> None:
    """Pools, or one pool: state, shepherd, generation, and every component with its host."""
    if pool is None:
        pools = call_or_exit(agent, "GET", "/v1/pools")
        if as_json:
            click.echo(json.dumps(pools, indent=2))
            return
        if not pools:
            click.echo("no pools")
        for item in pools:
            click.echo(f"{item['pool']:<30} {item['state']:<12} shepherd {item['shepherd']}")
        return
    found = call_or_exit(agent, "GET", pool_path(pool))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console

    reason = f" ({found['reason']})" if found.get("reason") else ""
    click.echo(
        f"pool {found['pool']}: {found['state']}{reason}, shepherd {found['shepherd']}, "
        f"generation {found['generation']}"
    )
    table = components_table(found, domains=True)
    if sys.stdout.isatty():
        Console().print(table)
        return
    # Not a terminal: wide enough that paths and domain names are never cut, and no padding
    # at the ends of lines.
    console = Console(width=250)
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


@click.command()
@click.argument("pool", shell_complete=complete_pool, callback=check_pool)
@click.option("--wait", is_flag=True, help="Follow it until every host has torn it down.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (event lines with --wait).")
@key_option
@agent_option
def terminate(pool: str, wait: bool, as_json: bool, key_file: str | None, agent: str) -> None:
    """Terminate a pool from any agent; every host tears down its VMs and storage.

    Signed with your operator key (--key): hosts that trust operator keys end a pool only
    for a trusted key with the operate role (or for the agent's own api-signing-key).
    With --wait, exits 1 if the pool ends failed rather than terminated.
    """
    key = load_signing_key(key_file)
    body: dict[str, object] | None = None
    if key is not None:
        from sdmesh.trust.termination import termination_text

        # Up to the floor the agent checks the signature against (the newest generation it
        # knows of the pool, from its record, gossip or tombstones), plus room for takeovers
        # and unit moves meanwhile.
        found = call_or_exit(agent, "GET", pool_path(pool) + "/termination")
        floor = found.get("floor") if isinstance(found, dict) else None
        if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
            click.echo(f"sdmesh: error: the agent gave no generation for pool {pool}", err=True)
            sys.exit(EXIT_FAILURE)
        body = {"signature": termination_text(key, pool, floor, time.time())}
    answer = call_or_exit(agent, "DELETE", pool_path(pool), body)
    if as_json and not wait:
        click.echo(json.dumps(answer))
    elif not as_json:
        click.echo(f"terminating {pool}")
    if wait:
        view = PoolView(pool, output_mode(as_json, sys.stdout), goal="terminated")
        final = follow(agent, pool, ("terminated", "failed"), view)
        if final["state"] != "terminated":  # as submit --wait: the pool failed
            if as_json:  # the other modes said it on stdout
                reason = f": {final['reason']}" if final.get("reason") else ""
                click.echo(f"sdmesh: error: pool {pool} {final['state']}{reason}", err=True)
            sys.exit(EXIT_FAILURE)
