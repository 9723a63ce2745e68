"""Entry point of the ``sdmesh`` command."""

from __future__ import annotations

import click

from sdmesh import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdmesh")
def cli() -> None:
    """Pools of virtual machines across a peer-to-peer mesh of hypervisor hosts."""


def main() -> None:
    cli()
