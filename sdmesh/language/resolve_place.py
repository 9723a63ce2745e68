"""The place phase: move ``a:b:name value`` attributes into their targets, repeating passes
while one succeeds (shared/spec/sf-language.md §4)."""

from __future__ import annotations

from sdmesh.language import functions
from sdmesh.language.resolve_base import CD, ResolveFailure, ResolverState
from sdmesh.language.values import Apply, Attr, Placement, Reference


class PlacePhase(ResolverState):
    """Places attributes written with a path into the descriptions the path names."""

    def place_tree(self, root: CD) -> None:
        pending: list[tuple[CD, Placement]] = []
        self._collect_placements(root, pending)
        while pending:
            remaining: list[tuple[CD, Placement]] = []
            for holder, placement in pending:
                target = self._place_target(holder, placement.path)
                if target is None:
                    remaining.append((holder, placement))
                else:
                    self._place(target, placement)
            if len(remaining) == len(pending):
                for holder, placement in remaining:
                    self._report_unplaceable(holder, placement)
                return
            pending = remaining

    def _place_target(self, holder: CD, path: tuple[str, ...]) -> CD | None:
        """The description ``a:b`` names from ``holder``; as SmartFrog's place phase does, a
        step that is a link is followed (into the description it names, not a copy)."""
        node = holder
        for step in path:
            attr = node.attrs.get(step)
            if attr is None:
                return None
            value = attr.value
            if type(value) is Reference:
                assert isinstance(value, Reference)
                if value.lazy or value.data:
                    return None
                try:
                    value = self._walk(value, node, linking=False)
                except ResolveFailure:
                    return None
            if type(value) is not CD:
                return None
            assert isinstance(value, CD)
            node = value
        return node

    def _collect_placements(self, cd: CD, out: list[tuple[CD, Placement]]) -> None:
        """Every pending placement under ``cd``, also those inside values being placed
        (at any depth: ``a:b extends X { c extends Y; }`` where Y places into itself)."""
        stack = [cd]
        while stack:
            node = stack.pop()
            out.extend((node, placement) for placement in node.placements)
            nested = [a.value for a in node.attrs.values() if type(a.value) is CD]
            nested.extend(p.attr.value for p in node.placements if type(p.attr.value) is CD)
            node.placements = []
            stack.extend(reversed(nested))

    def _place(self, target: CD, placement: Placement) -> None:
        attr = placement.attr
        old = target.attrs.get(placement.name)
        if old is None and "sfOverride" in attr.tags:
            self.reporter.error(
                f"[sfOverride] attribute '{placement.name}' overrides nothing where it is placed",
                attr.location,
            )
        if old is not None:
            if "sfFinal" in old.tags:
                self.reporter.error(
                    f"cannot place into final attribute '{placement.name}'",
                    attr.location,
                    (("declared [sfFinal] here", old.location),),
                )
                return
            if not old.tags <= attr.tags:
                attr = Attr(attr.value, old.tags | attr.tags, attr.location)
        value = attr.value
        if type(value) is CD:
            assert isinstance(value, CD)
            value.parent = target
        elif type(value) is Apply:
            assert isinstance(value, Apply)
            value.args.parent = target
        target.attrs[placement.name] = attr

    def _report_unplaceable(self, holder: CD, placement: Placement) -> None:
        node = holder
        for index, step in enumerate(placement.path):
            attr = node.attrs.get(step)
            so_far = ":".join(placement.path[: index + 1])
            if attr is None:
                message = f"'{so_far}' does not exist here"
                break
            target = self._place_target(node, (step,))
            if target is None:
                message = f"'{so_far}' is a {functions.type_name(attr.value)}, not a component"
                break
            node = target
        else:  # pragma: no cover - a placeable path would have been placed
            message = "target not found"
        full = ":".join((*placement.path, placement.name))
        self.reporter.error(f"cannot place '{full}': {message}", placement.attr.location)
