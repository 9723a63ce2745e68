"""Resolving LAZY references at run time, against the live component tree.

At run time ``ROOT`` is the deployed ``sfConfig`` and a component's parent is its component
parent (shared/spec/sf-language.md §6). A reference that lands on a child description that is
live yields the live :class:`Node` (``storageBackend LAZY ATTRIB loop`` gives the domain its
running disk component); other values are returned as they are. Resolution is not cached:
each call sees the tree as it is now, as ``sfResolve`` does.
"""

from __future__ import annotations

import os

from sdmesh.language import functions
from sdmesh.language.resolver import MAX_CHAIN, default_properties
from sdmesh.language.values import NULL, Apply, ComponentDescription, Reference
from sdmesh.lifecycle.model import Node


class ResolutionError(Exception):
    """A LAZY reference could not be resolved now."""


def resolve_attribute(root: Node, node: Node, name: str) -> object:
    """The current value of ``node``'s attribute ``name``, following LAZY links."""
    attr = node.description.attrs.get(name)
    if attr is None:
        raise ResolutionError(f"{node.path} has no attribute '{name}'")
    return resolve_value(root, node, attr.value, 0)


def resolve_value(root: Node, holder: Node, value: object, depth: int = 0) -> object:
    if depth > MAX_CHAIN:
        raise ResolutionError("reference chain too long (a cycle of LAZY links?)")
    if isinstance(value, Reference) and not value.data:
        return resolve_reference(root, holder, value, depth + 1)
    if isinstance(value, Apply):
        return _apply(root, holder, value, depth + 1)
    if isinstance(value, list):
        return [resolve_value(root, holder, item, depth + 1) for item in value]
    return value


def resolve_reference(root: Node, holder: Node, reference: Reference, depth: int = 0) -> object:
    try:
        return _walk(root, holder, reference, depth)
    except ResolutionError:
        if reference.optional:
            return reference.default if reference.has_default else NULL
        raise


def _walk(root: Node, holder: Node, reference: Reference, depth: int) -> object:
    current: object = holder
    for part in reference.parts:
        kind, name = part.kind, part.name or ""
        if kind in ("PROPERTY", "IPROPERTY"):
            return _text(kind, name, default_properties())
        if kind in ("ENVPROPERTY", "IENVPROPERTY"):
            return _text(kind, name, dict(os.environ))
        if kind in ("HOST", "PROCESS", "CONSTANT"):
            raise ResolutionError(f"{kind} references are not supported by sdmesh")
        if not isinstance(current, Node):
            raise ResolutionError(
                f"{reference.path()}: '{name or kind}' is reached through a "
                f"{functions.type_name(current)}, not a component"
            )
        if kind == "ATTRIB":
            owner: Node | None = current
            while owner is not None and name not in owner.description.attrs:
                owner = owner.parent
            if owner is None:
                raise ResolutionError(f"{reference.path()}: no attribute '{name}' visible")
            current = _attribute(root, owner, name, depth)
        elif kind == "HERE":
            if name not in current.description.attrs:
                raise ResolutionError(f"{reference.path()}: {current.path} has no '{name}'")
            current = _attribute(root, current, name, depth)
        elif kind == "PARENT":
            if current.parent is None:
                raise ResolutionError(f"{reference.path()}: the root has no parent")
            current = current.parent
        elif kind == "ROOT":
            current = root
        # THIS: stay
    return current


def _attribute(root: Node, owner: Node, name: str, depth: int) -> object:
    live = owner.child(name)
    if live is not None:
        return live
    value = owner.description.attrs[name].value
    if isinstance(value, ComponentDescription):
        return value
    return resolve_value(root, owner, value, depth + 1)


def _apply(root: Node, holder: Node, apply: Apply, depth: int) -> object:
    function_name = apply.function
    args = apply.args
    if function_name == "APPLY":
        function_name = str(args.get("sfFunctionClass", ""))
    function = functions.lookup(function_name)
    if function is None:
        raise ResolutionError(f"unknown function '{function_name}'")
    values = [
        (name, resolve_value(root, holder, attr.value, depth + 1))
        for name, attr in args.attrs.items()
        if name not in functions.CONTROL_ATTRIBUTES
    ]
    try:
        return function(values)
    except functions.FunctionError as error:
        raise ResolutionError(str(error)) from None


def _text(kind: str, name: str, source: dict[str, str]) -> object:
    if name not in source:
        raise ResolutionError(f"{kind} {name} is not set")
    if kind.startswith("I"):
        try:
            return int(source[name])
        except ValueError:
            raise ResolutionError(f"{kind} {name} is not an integer") from None
    return source[name]
