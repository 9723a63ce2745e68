"""Entry point of the ``sdmesh`` command (shared/spec/cli.md)."""

from __future__ import annotations

import sys
import traceback

import click

from sdmesh import __version__
from sdmesh.cli.common import EXIT_FAILURE
from sdmesh.cli.keygen import keygen
from sdmesh.cli.language import describe, show, validate
from sdmesh.cli.mesh import join, leave, peers
from sdmesh.cli.run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdmesh")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.pass_context
def cli(context: click.Context, debug: bool) -> None:
    """Pools of virtual machines across a peer-to-peer mesh of hypervisor hosts.

    Pools are described in SmartFrog's language (as CERN's SmartDomains did); any agent of
    the mesh can deploy, report on and terminate any pool.
    """
    context.obj = {"debug": debug}


cli.add_command(validate)
cli.add_command(show)
cli.add_command(run)
cli.add_command(describe)
cli.add_command(keygen)
cli.add_command(join)
cli.add_command(peers)
cli.add_command(leave)


def main() -> None:
    """Run the CLI; anything unexpected becomes one line and exit 1 (a traceback with --debug)."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    except Exception as error:
        if debug:
            traceback.print_exc()
        click.echo(
            f"sdmesh: internal error: {type(error).__name__}: {error} "
            "(run with --debug for a traceback)",
            err=True,
        )
        sys.exit(EXIT_FAILURE)
