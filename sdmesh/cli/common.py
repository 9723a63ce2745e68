"""Options and output helpers shared by the commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the language is not imported by commands that do not read descriptors
    from sdmesh.language.source import Diagnostic

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes of shared/spec/cli.md.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def parse_definitions(values: Iterable[str]) -> dict[str, str]:
    """``-D name=value`` options: values for ``PROPERTY`` references."""
    definitions: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="-D")
        definitions[name] = value
    return definitions


def descriptor_options(function: F) -> F:
    """``-I DIR`` and ``-D NAME=VALUE``, for every command that reads descriptors."""
    function = click.option(
        "-D",
        "--define",
        "defines",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a property seen by PROPERTY references.",
    )(function)
    return click.option(
        "-I",
        "--include-dir",
        "include_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Extra directory searched by #include (also: SDMESH_PATH).",
    )(function)


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    for diagnostic in diagnostics:
        text = diagnostic.format()
        if sys.stderr.isatty():
            color = {"error": "red", "warning": "yellow"}.get(diagnostic.severity)
            head, _, rest = text.partition("\n")
            text = click.style(head, fg=color, bold=True) + ("\n" + rest if rest else "")
        click.echo(text, err=True)
