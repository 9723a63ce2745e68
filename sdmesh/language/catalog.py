"""The built-in component library as documentation: components and their schemas.

``sdmesh describe`` reads schemas from the same files ``validate`` checks against, so what it
prints cannot drift from what is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdmesh.language.loader import Loader
from sdmesh.language.render import format_value
from sdmesh.language.resolver import Resolver
from sdmesh.language.schema import SCHEMA_MARKER, SchemaChecker, SchemaEntry
from sdmesh.language.source import Reporter
from sdmesh.language.values import ComponentDescription

LIBRARY_ENTRY = "sdmesh/components.sf"


@dataclass(frozen=True)
class AttributeDoc:
    name: str
    type: str
    required: bool
    default: str | None
    description: str


@dataclass(frozen=True)
class ComponentDoc:
    name: str
    sf_class: str | None
    attributes: list[AttributeDoc]


def load_library(include: str = LIBRARY_ENTRY) -> tuple[ComponentDescription, Resolver]:
    reporter = Reporter()
    root = Loader(reporter).load_text("<library>", f'#include "{include}"\n')
    resolver = Resolver(reporter)
    resolver.type_tree(root)
    resolver.place_tree(root)
    reporter.raise_if_failed()
    return root, resolver


def components() -> list[ComponentDoc]:
    """Every component the agents run (it has an sfClass) of the built-in library; names
    kept only so that old descriptors resolve (``sdmeshRuns false``) are left out."""
    root, resolver = load_library()
    docs = []
    for name, attr in root.attrs.items():
        value = attr.value
        if (
            isinstance(value, ComponentDescription)
            and "sfClass" in value.attrs
            and SCHEMA_MARKER not in value.attrs
            and value.get("sdmeshRuns") is not False
        ):
            docs.append(_describe(name, value, resolver))
    return docs


def describe(name: str) -> ComponentDoc:
    root, resolver = load_library()
    attr = root.attrs.get(name)
    if attr is None or not isinstance(attr.value, ComponentDescription):
        raise KeyError(name)
    return _describe(name, attr.value, resolver)


def _describe(name: str, cd: ComponentDescription, resolver: Resolver) -> ComponentDoc:
    checker = SchemaChecker(resolver, Reporter())
    entries: dict[str, SchemaEntry] = {}
    for _, schema in checker.schemas_of(cd):
        for entry in schema:
            entries[entry.name] = entry
    attributes = []
    for entry in entries.values():
        current = cd.attrs.get(entry.name)
        default = None if current is None else format_value(current.value)
        detail = entry.description
        if entry.choices:
            detail += f" (one of {', '.join(format_value(c) for c in entry.choices)})"
        if entry.minimum is not None or entry.maximum is not None:
            low = "" if entry.minimum is None else f"{entry.minimum:g}"
            high = "" if entry.maximum is None else f"{entry.maximum:g}"
            detail += f" [{low}..{high}]"
        binding = " (LAZY link)" if entry.binding == "lazy" else ""
        attributes.append(
            AttributeDoc(
                entry.name,
                entry.describe_type() + binding,
                not entry.optional and default is None,
                default,
                detail.strip(),
            )
        )
    # The component's own attributes first; SmartFrog's common sf* ones after them.
    attributes.sort(key=lambda doc: doc.name.startswith("sf"))
    sf_class = cd.get("sfClass")
    return ComponentDoc(name, sf_class if isinstance(sf_class, str) else None, attributes)


__all__ = ["AttributeDoc", "ComponentDoc", "components", "describe"]
