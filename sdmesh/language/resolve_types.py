"""The type phase: expand every ``extends`` over the whole file (shared/spec/sf-language.md §4).

Prototypes are merged left to right; an attribute that already exists keeps its position and
takes the new value; tags are unioned. Prototype references resolve from the description being
built (which is empty at that moment), so effectively from its enclosing scope.
"""

from __future__ import annotations

from sdmesh.language import functions
from sdmesh.language.resolve_base import CD, MAX_CHAIN, ResolveFailure, ResolverState
from sdmesh.language.resolve_copy import TreeTooLarge, copy_attr
from sdmesh.language.values import Apply, Attr, Placement, Reference


class TypePhase(ResolverState):
    """Merges prototypes into the descriptions that extend them."""

    def type_tree(self, cd: CD) -> None:
        """Type-resolve ``cd`` and everything nested in it (idempotent)."""
        if cd.complete:
            return
        cd.complete = True
        self.ensure_typed(cd)
        for attr in list(cd.attrs.values()):
            self._type_value(attr.value)
        for placement in cd.placements:
            self._type_value(placement.attr.value)

    def _type_value(self, value: object) -> None:
        t = type(value)
        if t is CD:
            assert isinstance(value, CD)
            self.type_tree(value)
        elif t is Apply:
            assert isinstance(value, Apply)
            self.type_tree(value.args)
        elif t is list:
            assert isinstance(value, list)
            for item in value:
                self._type_value(item)

    def ensure_typed(self, cd: CD) -> None:
        """Merge ``cd``'s prototypes into its attributes."""
        prototypes = cd.prototypes
        if prototypes is None:
            return
        if len(self._typing) >= MAX_CHAIN:
            self.reporter.error(f"extends chain longer than {MAX_CHAIN}", cd.location)
            cd.prototypes = None
            return
        self._typing.append(cd)
        try:
            attrs: dict[str, Attr] = {}
            placements: list[Placement] = []
            for prototype in prototypes:
                if type(prototype) is CD:  # a body: its children are already parented to cd
                    assert isinstance(prototype, CD)
                    self._merge(cd, attrs, prototype.attrs, copy=False)
                    placements.extend(prototype.placements)
                    continue
                assert isinstance(prototype, Reference)
                target = self._resolve_prototype(prototype, cd)
                if target is None:
                    continue
                try:
                    self.type_tree(target)
                    self._merge(cd, attrs, target.attrs, copy=True)
                    placements.extend(
                        Placement(p.path, p.name, copy_attr(p.attr, cd, self.budget))
                        for p in target.placements
                    )
                except TreeTooLarge as error:
                    error.location = error.location or prototype.location
                    raise
            cd.attrs = attrs
            cd.placements = placements
            cd.prototypes = None
        finally:
            self._typing.pop()

    def _merge(self, cd: CD, attrs: dict[str, Attr], new: dict[str, Attr], copy: bool) -> None:
        for name, attr in new.items():
            if copy:
                attr = copy_attr(attr, cd, self.budget)
            old = attrs.get(name)
            if old is None and "sfOverride" in attr.tags and not copy:
                self.reporter.error(
                    f"[sfOverride] attribute '{name}' overrides nothing: no prototype defines it",
                    attr.location,
                )
            if old is not None:
                if "sfFinal" in old.tags:
                    self.reporter.error(
                        f"cannot override final attribute '{name}'",
                        attr.location,
                        (("declared [sfFinal] here", old.location),),
                    )
                    continue
                if not old.tags <= attr.tags:
                    attr = Attr(attr.value, old.tags | attr.tags, attr.location)
            attrs[name] = attr

    def _resolve_prototype(self, reference: Reference, cd: CD) -> CD | None:
        try:
            target = self._walk(reference, cd, linking=False)
        except ResolveFailure as failure:
            self.reporter.error(
                f"cannot extend {reference.path()}: {failure.message}", reference.location
            )
            return None
        if type(target) is not CD:
            described = functions.type_name(target)
            self.reporter.error(
                f"cannot extend {reference.path()}: it is a {described}, not a component "
                "description",
                reference.location,
            )
            return None
        assert isinstance(target, CD)
        if target in self._typing:
            chain = " -> ".join(c.path() for c in self._typing[self._typing.index(target) :])
            self.reporter.error(f"cyclic extends: {chain} -> {target.path()}", reference.location)
            return None
        if target is cd or any(ancestor is target for ancestor in cd.ancestors()):
            self.reporter.error(
                f"cyclic extends: {reference.path()} contains the description extending it",
                reference.location,
            )
            return None
        return target
