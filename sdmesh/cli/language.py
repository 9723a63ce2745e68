"""``sdmesh validate`` and ``sdmesh show``: the description language from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sdmesh.cli.common import (
    EXIT_BAD_INPUT,
    descriptor_options,
    parse_definitions,
    print_diagnostics,
)
from sdmesh.language import DescriptorError, ResolvedDescriptor, resolve_file, resolve_text
from sdmesh.language.values import ComponentDescription


def load(path: str, include_dirs: tuple[Path, ...], defines: tuple[str, ...]) -> ResolvedDescriptor:
    """Resolve a descriptor file (``-`` reads standard input)."""
    properties = parse_definitions(defines)
    if path == "-":
        return resolve_text(sys.stdin.read(), "<stdin>", include_dirs, properties)
    return resolve_file(path, include_dirs, properties)


def count_components(cd: ComponentDescription) -> int:
    return sum(1 + count_components(child) for _, child in cd.children())


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@descriptor_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def validate(
    files: tuple[str, ...], include_dirs: tuple[Path, ...], defines: tuple[str, ...], as_json: bool
) -> None:
    """Parse and resolve descriptors and check their components' schemas.

    Every error is reported as FILE:LINE:COL. Exits 0 when all files are valid, 2 otherwise.
    """
    failed = False
    for path in files:
        try:
            resolved = load(path, include_dirs, defines)
        except DescriptorError as error:
            failed = True
            if as_json:
                report = {"file": path, "valid": False}
                report["diagnostics"] = [d.to_json() for d in error.diagnostics]
                click.echo(json.dumps(report))
            else:
                print_diagnostics(error.diagnostics)
                click.echo(f"{path}: invalid ({len(error.errors)} error(s))", err=True)
            continue
        components = count_components(resolved.root) + 1
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "file": path,
                        "valid": True,
                        "components": components,
                        "digest": resolved.digest(),
                        "diagnostics": [d.to_json() for d in resolved.warnings],
                    }
                )
            )
        else:
            print_diagnostics(resolved.warnings)
            click.echo(f"{path}: ok ({components} components)")
    if failed:
        sys.exit(EXIT_BAD_INPUT)


@click.command()
@click.argument("file", metavar="FILE")
@descriptor_options
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
def show(
    file: str, include_dirs: tuple[Path, ...], defines: tuple[str, ...], as_json: bool
) -> None:
    """Print the resolved sfConfig tree of a descriptor.

    The text form is SmartFrog that parses back to the same tree; --json prints an object with
    attributes in descriptor order, LAZY references as {"$lazy": "..."}.
    """
    try:
        resolved = load(file, include_dirs, defines)
    except DescriptorError as error:
        print_diagnostics(error.diagnostics)
        sys.exit(EXIT_BAD_INPUT)
    print_diagnostics(resolved.warnings)
    if as_json:
        click.echo(json.dumps(resolved.to_json(), indent=2))
    else:
        click.echo(resolved.to_sf(), nl=False)


@click.command()
@click.argument("component", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def describe(component: str | None, as_json: bool) -> None:
    """List the built-in components, or show one component's attributes.

    Attributes come from the component's schema: type, whether it is required, its default
    and what it means.
    """
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from sdmesh.language import catalog

    if component is None:
        docs = catalog.components()
        if as_json:
            click.echo(json.dumps([{"name": d.name, "sfClass": d.sf_class} for d in docs]))
            return
        for doc in docs:
            click.echo(f"{doc.name:<28} {doc.sf_class}")
        return
    try:
        doc = catalog.describe(component)
    except KeyError:
        known = ", ".join(d.name for d in catalog.components())
        click.echo(f"sdmesh: error: no component '{component}' (known: {known})", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(asdict(doc)))
        return
    table = Table(title=f"{doc.name} ({doc.sf_class})")
    for column in ("attribute", "type", "required", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for attribute in doc.attributes:
        table.add_row(
            attribute.name,
            attribute.type,
            "yes" if attribute.required else "",
            attribute.default or "",
            attribute.description,
        )
    Console().print(table)
