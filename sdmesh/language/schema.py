"""Component schemas: which attributes a component takes, their types, and what they mean.

SmartFrog attaches schemas as attributes (``vmSchema extends Schema { memory extends Integer;
}``) that check the attributes of the description holding them (shared/spec/sf-language.md §8).
sdmesh accepts that form and a cheaper one used throughout the built-in library:
``vmSchema DATA VirtualMachineSchema;`` — a DATA reference to a top-level schema, so that ten
thousand components don't each carry a copy of it. Entries may add ``description``, ``min``,
``max`` and ``choices`` to SmartFrog's ``class``/``optional``/``binding``. Defaults are the
component's own attribute values, as in SmartFrog. Schemas are checked after the link phase and
then removed from the resolved tree (they are never deployed).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Final

from sdmesh.language.functions import to_text, type_name
from sdmesh.language.resolver import (
    POISON,
    ResolveFailure,
    Resolver,
    function_phase_kind,
    is_lazy,
    node_label,
)
from sdmesh.language.source import Location, Reporter
from sdmesh.language.values import (
    NULL,
    TBD,
    Apply,
    ComponentDescription,
    Float32,
    Long,
    Reference,
)

CD = ComponentDescription

SCHEMA_MARKER: Final = "phase.schema"

_CLASS_CHECKS: Final[dict[str, tuple[str, type | tuple[type, ...]]]] = {
    "String": ("a String", str),
    "Integer": ("an Integer", int),
    "Long": ("a Long", int),
    "Float": ("a Float", (int, float)),
    "Double": ("a Double", (int, float)),
    "Number": ("a number", (int, float)),
    "Boolean": ("a Boolean", bool),
    "Vector": ("a Vector", list),
    "ComponentDescription": ("a component description", CD),
    "Reference": ("a reference", Reference),
}


@dataclass(frozen=True)
class SchemaEntry:
    """What one attribute of a component must look like."""

    name: str
    classes: tuple[str, ...]
    optional: bool
    binding: str
    description: str
    minimum: float | None
    maximum: float | None
    choices: tuple[object, ...] | None
    location: Location

    def describe_type(self) -> str:
        names = [_class_label(c) for c in self.classes if c not in ("anyClass", "Object")]
        return " or ".join(names) if names else "any value"


def _short_class(name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    return "Null" if short == "SFNull" else short


def _class_label(name: str) -> str:
    entry = _CLASS_CHECKS.get(_short_class(name))
    return entry[0] if entry else _short_class(name)


def _matches_class(value: object, class_name: str) -> bool:
    short = _short_class(class_name)
    if short in ("anyClass", "Object"):
        return True
    if short == "Null":
        return value is NULL
    entry = _CLASS_CHECKS.get(short)
    if entry is None:
        return True  # a Java class we cannot check (InetAddress...): accept
    expected = entry[1]
    if isinstance(value, bool) and short != "Boolean":
        return False
    if short == "Integer" and isinstance(value, Long):
        return False
    if short in ("Integer", "Long") and isinstance(value, float | Float32):
        return False
    return isinstance(value, expected)


def read_schema(schema: CD) -> list[SchemaEntry]:
    """The entries of a schema description (attributes that are descriptions)."""
    entries: list[SchemaEntry] = []
    for name, attr in schema.attrs.items():
        entry = attr.value
        if not isinstance(entry, CD):
            continue
        raw_class = entry.get("class", "anyClass")
        classes = (
            tuple(str(c) for c in raw_class) if isinstance(raw_class, list) else (str(raw_class),)
        )
        raw_choices = entry.get("choices")
        minimum = entry.get("min")
        maximum = entry.get("max")
        entries.append(
            SchemaEntry(
                name=name,
                classes=classes,
                optional=entry.get("optional") is True,
                binding=str(entry.get("binding", "anyBinding")),
                description=str(entry.get("description", "")),
                minimum=float(minimum) if isinstance(minimum, int | float) else None,
                maximum=float(maximum) if isinstance(maximum, int | float) else None,
                choices=tuple(raw_choices) if isinstance(raw_choices, list) else None,
                location=attr.location,
            )
        )
    return entries


class SchemaChecker:
    """Checks every description in a resolved tree against the schemas it carries."""

    def __init__(self, resolver: Resolver, reporter: Reporter) -> None:
        self.resolver = resolver
        self.reporter = reporter
        self._cache: dict[int, list[SchemaEntry]] = {}
        self._keep_alive: list[CD] = []

    def schemas_of(self, cd: CD) -> list[tuple[str, list[SchemaEntry]]]:
        """(attribute name, entries) for each schema attached to ``cd``."""
        found: list[tuple[str, list[SchemaEntry]]] = []
        for name, attr in cd.attrs.items():
            value = attr.value
            target: object = None
            if type(value) is Reference:
                assert isinstance(value, Reference)
                if not value.data:
                    continue
                target = self._data_target(value, cd)
            elif type(value) is CD:
                target = value
            if type(target) is CD:
                assert isinstance(target, CD)
                if function_phase_kind(target) == "schema":
                    entries = self._cache.get(id(target))
                    if entries is None:
                        entries = read_schema(target)
                        self._cache[id(target)] = entries
                        self._keep_alive.append(target)
                    found.append((name, entries))
        return found

    def _data_target(self, reference: Reference, cd: CD) -> object:
        parts = reference.parts
        if len(parts) == 1 and parts[0].kind == "ATTRIB":  # the library's form: a plain name
            name = parts[0].name
            node: CD | None = cd
            while node is not None:
                attr = node.attrs.get(name or "")
                if attr is not None:
                    return attr.value
                node = node.parent
            return None
        try:
            return self.resolver.walk_description(reference, cd)
        except ResolveFailure:
            return None

    def check_resolvable(self, cd: CD) -> None:
        """Before ``cd``'s attributes are linked: a compulsory attribute whose value is TBD or
        cannot be resolved is reported as missing, as SmartFrog's schema check (which runs
        where the schema attribute sits, before the component's own attributes) reports it."""
        schemas = self.schemas_of(cd)
        if not schemas:
            return
        for _, entries in schemas:
            for entry in entries:
                attr = cd.attrs.get(entry.name)
                if entry.optional or attr is None:
                    continue
                if isinstance(attr.value, TBD):
                    why = "it is TBD"
                else:
                    try:
                        self.resolver.link_quietly(cd, entry.name)
                        continue
                    except ResolveFailure as failure:
                        if failure.message.startswith("cyclic"):
                            continue  # reported as the cycle it is, by the link phase
                        why = failure.message
                about = f" ({entry.description})" if entry.description else ""
                self.reporter.error(
                    f"{kind_label(cd)} needs attribute '{entry.name}'{about}: {why}",
                    attr.location,
                    (("the schema that requires it", entry.location),),
                )
                cd.attrs[entry.name] = attr.with_value(POISON)

    def check_tree(self, root: CD) -> None:
        stack = [root]
        while stack:
            cd = stack.pop()
            schemas = self.schemas_of(cd)
            if schemas:
                self.check(cd, schemas)
                for name, _ in schemas:
                    del cd.attrs[name]
            stack.extend(
                attr.value for attr in reversed(cd.attrs.values()) if type(attr.value) is CD
            )

    def check(self, cd: CD, schemas: list[tuple[str, list[SchemaEntry]]]) -> None:
        schema_names = {name for name, _ in schemas}
        known: dict[str, SchemaEntry] = {}
        for _, entries in schemas:
            for entry in entries:
                known[entry.name] = entry
        for entry in known.values():
            self._check_entry(cd, entry)
        for name, attr in cd.attrs.items():
            if name in known or name in schema_names or name.startswith("sf"):
                continue
            if isinstance(attr.value, CD):
                continue
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
            if close:
                self.reporter.warning(
                    f"{kind_label(cd)} has no attribute '{name}'; did you mean '{close[0]}'?",
                    attr.location,
                )

    def _check_entry(self, cd: CD, entry: SchemaEntry) -> None:
        attr = cd.attrs.get(entry.name)
        about = f" ({entry.description})" if entry.description else ""
        if attr is None or attr.value is NULL:
            if not entry.optional:
                self.reporter.error(
                    f"{kind_label(cd)} needs attribute '{entry.name}'{about}",
                    cd.location,
                    (("the schema that requires it", entry.location),),
                )
            return
        value = attr.value
        if value is POISON:
            return
        lazy = is_lazy(value)
        if entry.binding == "eager" and lazy:
            self.reporter.error(
                f"'{entry.name}' of {kind_label(cd)} must be known when the descriptor is "
                "resolved; it cannot be LAZY",
                attr.location,
            )
            return
        if entry.binding == "lazy" and not lazy:
            self.reporter.error(
                f"'{entry.name}' of {kind_label(cd)} must be a LAZY reference to a live "
                f"component{about}, not {type_name(value)} {_show(value)}",
                attr.location,
            )
            return
        if lazy or isinstance(value, Apply):
            return  # known only at run time
        if not any(_matches_class(value, c) for c in entry.classes):
            self.reporter.error(
                f"'{entry.name}' of {kind_label(cd)} must be {entry.describe_type()}{about}, "
                f"not {type_name(value)} {_show(value)}",
                attr.location,
            )
            return
        if isinstance(value, int | float) and not isinstance(value, bool):
            if entry.minimum is not None and value < entry.minimum:
                self.reporter.error(
                    f"'{entry.name}' of {kind_label(cd)} is {value}; the minimum is "
                    f"{_number(entry.minimum)}",
                    attr.location,
                )
            if entry.maximum is not None and value > entry.maximum:
                self.reporter.error(
                    f"'{entry.name}' of {kind_label(cd)} is {value}; the maximum is "
                    f"{_number(entry.maximum)}",
                    attr.location,
                )
        if entry.choices is not None and value not in entry.choices:
            allowed = ", ".join(_show(choice) for choice in entry.choices)
            self.reporter.error(
                f"'{entry.name}' of {kind_label(cd)} is {_show(value)}; choose one of {allowed}",
                attr.location,
            )


def kind_label(cd: CD) -> str:
    base = f" ({cd.extends[-1]})" if cd.extends else ""
    return f"{node_label(cd)}{base}"


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return to_text(value)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
