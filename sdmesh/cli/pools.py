"""``sdmesh submit``, ``sdmesh status`` and ``sdmesh terminate``: pools, through any agent."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from sdmesh.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    descriptor_options,
    print_diagnostics,
)
from sdmesh.cli.mesh import agent_option

POLL_SECONDS = 0.5
FINAL_STATES = ("running", "failed", "terminated")


def request(agent: str, method: str, path: str, body: object | None = None) -> Any:
    """One call to the agent's API: exit 2 for what the agent calls bad input (4xx), 1 when
    it cannot be reached or fails, with its message either way."""
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(
        agent.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace").strip() or error.reason
        click.echo(f"sdmesh: error: {message}", err=True)
        sys.exit(EXIT_BAD_INPUT if 400 <= error.code < 500 else EXIT_FAILURE)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        click.echo(
            f"sdmesh: error: cannot reach the agent at {agent} ({reason}); is 'sdmesh join' "
            "running there? (--agent URL or SDMESH_AGENT picks another)",
            err=True,
        )
        sys.exit(EXIT_FAILURE)


@click.command()
@click.argument("file", metavar="FILE")
@click.option("--name", "pool_name", metavar="POOL", help="Pool id [FILE's name + random].")
@click.option("--wait", is_flag=True, help="Follow the pool until it runs or fails.")
@click.option("--dry-run", is_flag=True, help="Print the placement; create nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (event lines with --wait).")
@descriptor_options
@agent_option
def submit(
    file: str,
    pool_name: str | None,
    wait: bool,
    dry_run: bool,
    as_json: bool,
    include_dirs: tuple[Path, ...],
    defines: tuple[str, ...],
    agent: str,
) -> None:
    """Hand a descriptor to the agent; any agent bootstraps the pool across the mesh.

    The descriptor is resolved here (its #include files are read here), then sent resolved.
    Prints the pool id.
    """
    from sdmesh.cli.language import load
    from sdmesh.language import DescriptorError
    from sdmesh.pools.records import check_pool_id
    from sdmesh.pools.submission import request_body

    if pool_name is not None:
        try:
            check_pool_id(pool_name)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--name") from None
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
    answer = request(agent, "POST", "/v1/pools", body)
    if dry_run:
        _print_plan(answer, as_json)
        sys.exit(EXIT_FAILURE if answer.get("unplaced") else 0)
    pool = str(answer["pool"])
    if as_json and not wait:
        click.echo(json.dumps(answer))
    elif not as_json:
        click.echo(pool)
    if wait:
        state = follow(agent, pool, ("running", "failed", "terminated"), as_json)
        sys.exit(0 if state == "running" else EXIT_FAILURE)


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


def follow(agent: str, pool: str, until: tuple[str, ...], as_json: bool) -> str:
    """Poll the pool's status, printing each component change, until a state in ``until``."""
    seen: dict[str, str] = {}
    while True:
        status = request(agent, "GET", f"/v1/pools/{pool}")
        for component in status.get("components", []):
            key, state = component["path"], component["state"]
            if seen.get(key) != state:
                seen[key] = state
                event = {
                    "pool": pool,
                    "path": key,
                    "kind": component.get("kind", ""),
                    "state": state,
                    "host": component.get("host", ""),
                    "domain": component.get("domain", ""),
                }
                if as_json:
                    click.echo(json.dumps(event))
                else:
                    click.echo(f"{key} {state} on {event['host'] or '-'}")
        if status["state"] in until:
            if not as_json:
                reason = f" ({status['reason']})" if status.get("reason") else ""
                click.echo(f"pool {pool} {status['state']}{reason}")
            return str(status["state"])
        time.sleep(POLL_SECONDS)


@click.command()
@click.argument("pool", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@agent_option
def status(pool: str | None, as_json: bool, agent: str) -> None:
    """Pools, or one pool: state, shepherd, generation, and every component with its host."""
    if pool is None:
        pools = request(agent, "GET", "/v1/pools")
        if as_json:
            click.echo(json.dumps(pools, indent=2))
            return
        if not pools:
            click.echo("no pools")
        for item in pools:
            click.echo(f"{item['pool']:<30} {item['state']:<12} shepherd {item['shepherd']}")
        return
    found = request(agent, "GET", f"/v1/pools/{pool}")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    reason = f" ({found['reason']})" if found.get("reason") else ""
    click.echo(
        f"pool {found['pool']}: {found['state']}{reason}, shepherd {found['shepherd']}, "
        f"generation {found['generation']}"
    )
    table = Table("component", "kind", "host", "state", "domain", box=None)
    for component in found["components"]:
        table.add_row(
            component["path"],
            component.get("kind", ""),
            component.get("host", ""),
            component["state"],
            component.get("domain", ""),
        )
    Console(soft_wrap=True).print(table)


@click.command()
@click.argument("pool")
@click.option("--wait", is_flag=True, help="Follow it until every host has torn it down.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (event lines with --wait).")
@agent_option
def terminate(pool: str, wait: bool, as_json: bool, agent: str) -> None:
    """Terminate a pool from any agent; every host tears down its VMs and storage."""
    answer = request(agent, "DELETE", f"/v1/pools/{pool}")
    if as_json and not wait:
        click.echo(json.dumps(answer))
    elif not as_json:
        click.echo(f"terminating {pool}")
    if wait:
        state = follow(agent, pool, ("terminated", "failed"), as_json)
        sys.exit(0 if state in ("terminated", "failed") else EXIT_FAILURE)
