"""The ``sdmesh`` group imports a command's module only when that command is used."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest

from sdmesh.cli.main import COMMANDS, cli

#: What ``sdmesh join`` must not import before the agent runs: the CLI's other commands'
#: dependencies, and the agent's heavy parts (it imports those itself, after joining).
NOT_FOR_JOIN = (
    "rich",
    "sdmesh.language",
    "sdmesh.runner",
    "sdmesh.lifecycle",
    "sdmesh.components",
    "sdmesh.storage",
    "aiohttp",
    "libvirt",
    "kademlia",
    "sdmesh.hypervisor",
    "sdmesh.dht",
)


def real_commands() -> dict[str, click.Command]:
    commands = {}
    for name, (module, attribute, _) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), f"{module}.{attribute}"
        commands[name] = command
    return commands


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_kept_help_is_the_first_paragraph_of_the_command_help(name: str) -> None:
    command = real_commands()[name]
    assert command.help is not None
    first = command.help.split("\n\n")[0]
    assert COMMANDS[name][2] == " ".join(first.split()), (
        f"update sdmesh.cli.main.COMMANDS[{name!r}] to the first paragraph of its help"
    )


@pytest.mark.parametrize("width", [60, 80, 200])
def test_top_level_help_is_what_an_eager_group_prints(width: int) -> None:
    eager = click.Group(
        "sdmesh", commands=real_commands(), params=cli.params, help=cli.help, callback=cli.callback
    )
    lazy = type(cli)(
        "sdmesh", params=cli.params, help=cli.help, lazy_commands=COMMANDS, callback=cli.callback
    )

    def help_text(group: click.Group) -> str:
        context = click.Context(group, info_name="sdmesh", terminal_width=width)
        return group.get_help(context)

    assert help_text(lazy) == help_text(eager)
    assert all(name in help_text(lazy) for name in COMMANDS)


def modules_after(*argv: str) -> set[str]:
    """sys.modules of a fresh interpreter once ``sdmesh ARGV`` returned."""
    code = (
        "import json, sys\n"
        "from sdmesh.cli.main import cli\n"
        f"cli.main({list(argv)!r}, prog_name='sdmesh', standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def imported(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_top_level_help_imports_no_command() -> None:
    modules = modules_after("--help")
    assert not [m for m in sorted({c[0] for c in COMMANDS.values()}) if m in modules]


def test_join_help_imports_neither_other_commands_nor_the_agent_heavy_parts() -> None:
    modules = modules_after("join", "--help")
    assert "sdmesh.cli.mesh" in modules
    assert not [p for p in NOT_FOR_JOIN if imported(modules, p)]


def test_the_agent_module_defers_its_heavy_imports() -> None:
    code = "import json, sys, sdmesh.agent.agent; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    assert not [p for p in NOT_FOR_JOIN if imported(modules, p)]


def test_a_command_runs_once_loaded_and_unknown_ones_still_fail() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["keygen", "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output
