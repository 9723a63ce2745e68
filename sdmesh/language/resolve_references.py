"""Following a reference's parts (shared/spec/sf-language.md §6): ``ATTRIB`` looks outwards
through the containers, ``HERE`` into one description, ``PARENT``, ``ROOT`` and ``THIS`` move;
``PROPERTY`` and ``ENVPROPERTY`` read what the policy lets the resolver see; ``HOST`` and
``PROCESS`` only resolve at run time and ``CONSTANT`` stays symbolic.

In the type and place phases a walk looks at the descriptions as written (typing what it looks
into); in the link phase it links each value it passes through.
"""

from __future__ import annotations

from sdmesh.language import functions
from sdmesh.language.policy import AGENT_READS_NOTHING
from sdmesh.language.resolve_base import (
    CD,
    MAX_CHAIN,
    POISON,
    ResolveFailure,
    ResolverState,
    is_lazy,
    node_label,
)
from sdmesh.language.values import Reference


class ReferenceWalk(ResolverState):
    """Resolves references from the description holding them."""

    def _walk(self, reference: Reference, holder: CD, linking: bool) -> object:
        """Follow ``reference`` from ``holder``; in the type phase values are not linked."""
        value: object = holder
        parts = reference.parts
        last = len(parts) - 1
        for index, part in enumerate(parts):
            self.work.step()
            kind = part.kind
            if kind in ("PROPERTY", "IPROPERTY", "ENVPROPERTY", "IENVPROPERTY"):
                if index != last:
                    raise ResolveFailure(f"{kind} must be the last part of a reference")
                return self._property(kind, part.name or "")
            if kind in ("HOST", "PROCESS"):
                if reference.lazy:
                    return reference
                raise ResolveFailure(
                    f"{kind} references name live daemons and resolve only at run time; "
                    f"write LAZY {reference.path()}"
                )
            if kind == "CONSTANT":
                # A Java static field: sdmesh has no Java, so the value stays symbolic, as a
                # LAZY reference does (validate and show print it; deployment refuses it).
                return reference.as_lazy()
            if type(value) is not CD:
                so_far = ":".join(str(p) for p in parts[:index])
                raise ResolveFailure(
                    f"'{so_far}' is a {functions.type_name(value)}, not a component"
                )
            assert isinstance(value, CD)
            node = value
            if not linking:
                self._typed_for_lookup(node)
            if kind == "ATTRIB":
                name = part.name or ""
                owner: CD | None = node
                while owner is not None:
                    if not linking:
                        self._typed_for_lookup(owner)
                    if name in owner.attrs:
                        break
                    owner = owner.parent
                if owner is None:
                    raise ResolveFailure(f"no attribute '{name}' is visible from here")
                value = self._get(owner, name, linking)
            elif kind == "HERE":
                name = part.name or ""
                if name not in node.attrs:
                    raise ResolveFailure(f"'{node_label(node)}' has no attribute '{name}'")
                if index > 0 and "sfLocal" in node.attrs[name].tags:
                    raise ResolveFailure(
                        f"'{name}' of '{node_label(node)}' is [sfLocal]: it can only be named "
                        "from its own description or one nested in it"
                    )
                value = self._get(node, name, linking)
            elif kind == "PARENT":
                if node.parent is None:
                    raise ResolveFailure("PARENT of the top-level description")
                value = node.parent
            elif kind == "ROOT":
                value = node.root()
            elif kind == "THIS":
                value = node
            if value is POISON:
                return POISON
            if index != last and is_lazy(value):
                return reference.as_lazy()
        return value

    def walk_description(self, reference: Reference, holder: CD) -> object:
        """Follow a reference through the descriptions as written (no linking)."""
        return self._walk(reference, holder, linking=False)

    def _typed_for_lookup(self, node: CD) -> None:
        """Type ``node`` before looking into it, unless it is being built right now (then
        its attributes are still empty, and the lookup goes on to its containers)."""
        if node.prototypes is not None and node not in self._typing:
            self.ensure_typed(node)

    def _get(self, owner: CD, name: str, linking: bool) -> object:
        if linking:
            return self.value_of(owner, name)
        value = owner.attrs[name].value
        if type(value) is Reference:
            assert isinstance(value, Reference)
            if not (value.lazy or value.data):
                key = (id(owner), name)
                if key in self._linking_keys or len(self._linking) >= MAX_CHAIN:
                    raise ResolveFailure(f"cyclic or too long chain of links through '{name}'")
                self._linking.append((owner, name))
                self._linking_keys.add(key)
                try:
                    return self._walk(value, owner, linking=False)
                finally:
                    self._linking.pop()
                    self._linking_keys.discard(key)
        return value

    def _property(self, kind: str, name: str) -> object:
        source = self.properties if kind in ("PROPERTY", "IPROPERTY") else self.environment
        if name not in source:
            where = "property" if kind in ("PROPERTY", "IPROPERTY") else "environment variable"
            why = "" if self.policy.host_environment else f": {AGENT_READS_NOTHING}"
            raise ResolveFailure(f"{where} '{name}' is not set{why}")
        text = source[name]
        if kind.startswith("I"):
            try:
                return int(text)
            except ValueError:
                raise ResolveFailure(f"{kind} {name}: '{text}' is not an integer") from None
        return text
