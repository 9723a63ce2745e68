"""``sdmesh run``: deploy a pool on one hypervisor and manage it in the foreground."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from pathlib import Path

import click

from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, descriptor_options, print_diagnostics
from sdmesh.cli.language import load
from sdmesh.cli.progress import Progress
from sdmesh.components.policy import local_run_policy
from sdmesh.language import DescriptorError
from sdmesh.lifecycle.model import Problem
from sdmesh.runner.local import EMBEDDED, LocalRun, RunError, default_state_dir

_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@click.command()
@click.argument("file", metavar="FILE")
@click.option(
    "--hypervisor",
    default=EMBEDDED,
    show_default=True,
    metavar="URI",
    help="libvirt URI (qemu:///system, xen:///system...); 'test' is the embedded simulated host.",
)
@click.option("--name", "pool", metavar="POOL", help="Pool name (default: the file's name).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where volumes, seeds and run locks live (default: /var/lib/sdmesh as root).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per state change.")
@click.option(
    "--allow-image-dir",
    "image_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="As root: a directory baseImage, kernel and initrd may name, besides "
    "<state-dir>/images (repeatable).",
)
@descriptor_options
def run(
    file: str,
    hypervisor: str,
    pool: str | None,
    state_dir: Path | None,
    as_json: bool,
    image_dirs: tuple[Path, ...],
    include_dirs: tuple[Path, ...],
    defines: tuple[str, ...],
) -> None:
    """Deploy and start a pool on one hypervisor, and keep managing it.

    Progress is shown live on a terminal. The pool keeps running (a VM that dies ends it as
    SmartFrog's lifecycle rules say) until Ctrl-C or SIGTERM, which terminate it cleanly:
    everything it created is removed. Exits 0 after a normal termination, 1 after a failure.
    """
    try:
        descriptor = load(file, include_dirs, defines)
    except DescriptorError as error:
        print_diagnostics(error.diagnostics)
        sys.exit(EXIT_BAD_INPUT)
    print_diagnostics(descriptor.warnings)
    name = pool or (Path(file).stem if file != "-" else "stdin")
    if not _POOL_NAME.fullmatch(name):
        raise click.BadParameter(
            f"{name!r}: use 1-63 letters, digits, '.', '_' or '-'", param_hint="--name"
        )
    host = hypervisor if hypervisor != EMBEDDED else f"{socket.gethostname()} (embedded test host)"
    progress = Progress(pool=name, host=host, json_lines=as_json)

    def problem(event: Problem) -> None:
        click.echo(f"sdmesh: warning: {event.path}: {event.message}", err=True)

    def note(message: str) -> None:
        click.echo(f"sdmesh: {message}", err=True)

    for directory in image_dirs:
        if not directory.is_absolute():
            raise click.BadParameter(f"{directory} is not absolute", param_hint="--allow-image-dir")
    state = state_dir or default_state_dir()
    local = LocalRun(
        descriptor,
        name,
        hypervisor,
        state,
        progress,
        problem,
        note,
        policy=local_run_policy(state, os.geteuid(), image_dirs),
    )
    try:
        with progress:
            record = asyncio.run(local.run())
    except RunError as error:
        click.echo(f"sdmesh: error: {error}", err=True)
        sys.exit(EXIT_FAILURE)
    if record.normal:
        if not as_json:
            click.echo(f"pool {name}: {record.description}", err=True)
        return
    where = f"{record.source}: " if record.source else ""
    click.echo(f"sdmesh: error: pool {name} failed: {where}{record.description}", err=True)
    sys.exit(EXIT_FAILURE)
