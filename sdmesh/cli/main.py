"""Entry point of the ``sdmesh`` command (shared/spec/cli.md)."""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click

from sdmesh import __version__
from sdmesh.cli.common import EXIT_FAILURE

#: Every command: the module that defines it, its function, and the first paragraph of its
#: help (what ``sdmesh --help`` lists). A command's module is imported only when that command
#: runs (or is asked for its own help): ``sdmesh join`` is started on every host, often many
#: at once, and must not pay for rich, the description language or the local runner.
#: tests/unit/cli/test_lazy_commands.py checks these entries against the commands themselves.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ca": (
        "sdmesh.cli.ca",
        "ca",
        "The cluster CA: host identities, their certificates and revocations.",
    ),
    "completion": (
        "sdmesh.cli.completion",
        "completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
    "describe": (
        "sdmesh.cli.language",
        "describe",
        "List the built-in components, or show one component's attributes.",
    ),
    "events": (
        "sdmesh.cli.events",
        "events",
        "Follow the agent's live events: members, pools and components, as they change.",
    ),
    "force-leave": (
        "sdmesh.cli.mesh",
        "force_leave",
        "Force a failed member out of the mesh: a host that is gone for good.",
    ),
    "join": (
        "sdmesh.cli.mesh",
        "join",
        "Run this host's agent in the foreground (a systemd service).",
    ),
    "keygen": (
        "sdmesh.cli.keygen",
        "keygen",
        "Write a new cluster key file: one base64-encoded 32-byte key per line.",
    ),
    "leave": (
        "sdmesh.cli.mesh",
        "leave",
        "Ask the agent to leave the mesh gracefully (it announces it, then exits).",
    ),
    "operator": (
        "sdmesh.cli.operator",
        "operator",
        "Operator signing keys, and the operators this host trusts.",
    ),
    "peers": (
        "sdmesh.cli.mesh",
        "peers",
        "Members as this agent sees them: name, address, state, incarnation, capacity, labels.",
    ),
    "run": (
        "sdmesh.cli.run",
        "run",
        "Deploy and start a pool on one hypervisor, and keep managing it.",
    ),
    "token": (
        "sdmesh.cli.tokens",
        "token",
        "Create, list and revoke the agent's API tokens (admin; secrets are shown once).",
    ),
    "status": (
        "sdmesh.cli.pools",
        "status",
        "Pools, or one pool: state, shepherd, generation, and every component with its host.",
    ),
    "submit": (
        "sdmesh.cli.pools",
        "submit",
        "Hand a descriptor to the agent; any agent bootstraps the pool across the mesh.",
    ),
    "terminate": (
        "sdmesh.cli.pools",
        "terminate",
        "Terminate a pool from any agent; every host tears down its VMs and storage.",
    ),
    "show": (
        "sdmesh.cli.language",
        "show",
        "Print the resolved sfConfig tree of a descriptor.",
    ),
    "validate": (
        "sdmesh.cli.language",
        "validate",
        "Parse and resolve descriptors and check their components' schemas.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands live in ``COMMANDS`` and are imported on first use.

    ``sdmesh --help`` lists them from the help kept above, without importing any of them;
    shell completion of command names does import them (it asks each for its help).
    """

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy_commands:
            return command
        module, attribute, _ = self.lazy_commands[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attribute} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet is shown with its help from
        ``lazy_commands`` (same truncation as click's own short help)."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = click.Command(name, help=self.lazy_commands[name][2])
            if not command.hidden:
                rows.append((name, command))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in rows]
            )


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="sdmesh")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.pass_context
def cli(context: click.Context, debug: bool) -> None:
    """Pools of virtual machines across a peer-to-peer mesh of hypervisor hosts.

    Pools are described in SmartFrog's language (as CERN's SmartDomains did); any agent of
    the mesh can deploy, report on and terminate any pool.
    """
    context.obj = {"debug": debug}


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
            "(`sdmesh --debug COMMAND ...` shows a traceback)",
            err=True,
        )
        sys.exit(EXIT_FAILURE)
