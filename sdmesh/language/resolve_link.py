"""The link phase (shared/spec/sf-language.md §7): eager references are replaced by their
values where the attribute has landed; LAZY ones are kept for run time, and a link through a
LAZY value becomes LAZY itself. A link to a description copies it. Once everything is linked,
a TBD left anywhere is an error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Final

from sdmesh.language.limits import LimitExceeded
from sdmesh.language.resolve_base import (
    CD,
    MAX_CHAIN,
    POISON,
    ResolveFailure,
    ResolverState,
    function_phase_kind,
    is_lazy,
    node_label,
)
from sdmesh.language.resolve_copy import TreeTooLarge, copy_cd
from sdmesh.language.values import NULL, TBD, Apply, Reference

#: Attributes the runtime adds to every component; LAZY links to them are not typos.
RUNTIME_ATTRIBUTES: Final = frozenset(
    {"sfHost", "sfProcess", "sfParent", "sfProcessComponentName", "sfCompleteName", "sfPool"}
)


class LinkPhase(ResolverState):
    """Links every eager reference and function, in place and once."""

    def link_tree(self, cd: CD) -> None:
        """Resolve every eager reference and function in ``cd`` and below, in order."""
        stack = [cd]
        # TBDs are reported once everything is linked (as SmartFrog does, after its link
        # phase), so a schema meeting one through a link reports the attribute it requires.
        tbds: list[tuple[CD, str, TBD]] = []
        while stack:
            node = stack.pop()
            if self.before_linking is not None:
                self.before_linking(node)
            children: list[CD] = []
            for name in list(node.attrs):
                value = self.value_of(node, name)
                if type(value) is CD:
                    assert isinstance(value, CD)
                    if function_phase_kind(value) != "schema":  # schemas are data until checked
                        children.append(value)
                elif type(value) is TBD:
                    assert isinstance(value, TBD)
                    tbds.append((node, name, value))
                elif is_lazy(value):
                    self._check_lazy(node, name, value)
            stack.extend(reversed(children))
        for node, name, value in tbds:
            attr = node.attrs.get(name)
            if attr is not None and attr.value is value:
                self._report_tbd(node, name, value)

    def value_of(self, cd: CD, name: str) -> object:
        """The linked value of ``cd``'s attribute ``name``, resolving it once and in place."""
        attr = cd.attrs[name]
        value = attr.value
        t = type(value)
        if t is Reference:
            assert isinstance(value, Reference)
            if value.lazy or value.data:
                return value
            result = self._guarded(cd, name, lambda: self._link_reference(value, cd))
        elif t is Apply:
            assert isinstance(value, Apply)
            if value.lazy:
                return value
            result = self._guarded(cd, name, lambda: self._apply(value, cd))
        elif t is CD:
            assert isinstance(value, CD)
            kind = function_phase_kind(value)
            if kind is None or kind == "schema":
                return value
            if kind == "assertions":
                result = self._guarded(cd, name, lambda: self._check_assertions(value, cd))
            else:
                result = self._guarded(cd, name, lambda: self._apply_template(value, cd))
        elif t is list:
            assert isinstance(value, list)
            result = self._guarded(cd, name, lambda: self._link_vector(value, cd))
        else:
            return value
        if result is not value:
            cd.attrs[name] = attr.with_value(result)
        return result

    def link_quietly(self, cd: CD, name: str) -> object:
        """:meth:`value_of`, raising :class:`ResolveFailure` instead of reporting it."""
        self._linking.append((cd, "\0quiet"))  # not outermost: failures propagate
        try:
            return self.value_of(cd, name)
        finally:
            self._linking.pop()

    def _guarded(self, cd: CD, name: str, compute: Callable[[], object]) -> object:
        key = (id(cd), name)
        if key in self._linking_keys:
            start = next(i for i, (c, n) in enumerate(self._linking) if c is cd and n == name)
            shown = " -> ".join(n for _, n in self._linking[start:]) + f" -> {name}"
            raise ResolveFailure(f"cyclic reference: {shown}")
        if len(self._linking) >= MAX_CHAIN:
            raise ResolveFailure(f"reference chain longer than {MAX_CHAIN} links")
        self._linking.append((cd, name))
        self._linking_keys.add(key)
        try:
            self.work.step()
            result = compute()
            self.work.check(result)
            return result
        except LimitExceeded as error:
            error.location = error.location or cd.attrs[name].location
            raise
        except ResolveFailure as failure:
            if len(self._linking) > 1:
                raise  # report once, at the outermost attribute being linked
            location = failure.location or cd.attrs[name].location
            self.reporter.error(failure.message, location)
            return POISON
        finally:
            self._linking.pop()
            self._linking_keys.discard(key)

    def _link_reference(self, reference: Reference, holder: CD) -> object:
        try:
            result = self._walk(reference, holder, linking=True)
        except ResolveFailure as failure:
            if failure.message.startswith("cyclic reference"):
                raise
            if reference.optional:
                return reference.default if reference.has_default else NULL
            raise ResolveFailure(
                f"cannot resolve {reference.canonical()}: {failure.message}",
                failure.location or reference.location,
            ) from None
        if result is POISON:
            return POISON
        if is_lazy(result):
            return reference.as_lazy()
        if type(result) is TBD:
            assert isinstance(result, TBD)
            raise ResolveFailure(
                f"{reference.canonical()} refers to a TBD value (declared at {result.location}); "
                "give it a value",
                reference.location,
            )
        if type(result) is CD:
            assert isinstance(result, CD)
            if result is holder or any(result is up for up in holder.ancestors()):
                raise ResolveFailure(
                    f"{reference.canonical()} links to a description that contains it: copying "
                    "it here would nest it in itself forever; write LAZY to refer to it",
                    reference.location,
                )
            # A link to a description copies it (SmartFrog); the copy links where it lands.
            try:
                copied = copy_cd(result, holder, self.budget)
                self.type_tree(copied)
            except TreeTooLarge as error:
                error.location = error.location or reference.location
                raise
            return copied
        return result

    def _link_vector(self, items: list[object], holder: CD) -> object:
        changed = False
        result: list[object] = []
        for item in items:
            t = type(item)
            new = item
            if t is Reference:
                assert isinstance(item, Reference)
                if not (item.lazy or item.data):
                    new = self._link_reference(item, holder)
            elif t is Apply:
                assert isinstance(item, Apply)
                if not item.lazy:
                    new = self._apply(item, holder)
            elif t is list:
                assert isinstance(item, list)
                new = self._link_vector(item, holder)
            changed = changed or new is not item
            result.append(new)
        return result if changed else items

    # =================================================================== checks & reports
    def _report_tbd(self, cd: CD, name: str, value: TBD) -> None:
        self.reporter.error(
            f"'{name}' of {node_label(cd)} is TBD: it must be given a value",
            cd.location,
            (("declared TBD here", value.location),),
        )
        cd.attrs[name] = cd.attrs[name].with_value(POISON)

    def _check_lazy(self, cd: CD, name: str, value: object) -> None:
        """Warn about a LAZY link whose first name exists nowhere: almost surely a typo."""
        if type(value) is not Reference:
            return
        assert isinstance(value, Reference)
        first = value.parts[0]
        if first.kind != "ATTRIB" or first.name in RUNTIME_ATTRIBUTES:
            return
        visible: list[str] = []
        node: CD | None = cd
        while node is not None:
            if first.name in node.attrs:
                return
            visible.extend(node.attrs)
            node = node.parent
        close = difflib.get_close_matches(first.name or "", visible, n=1, cutoff=0.75)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        self.reporter.warning(
            f"LAZY {value.path()} (attribute '{name}' of {node_label(cd)}) names nothing "
            f"visible from here; it will fail at run time unless '{first.name}' appears "
            f"then{hint}",
            value.location,
        )
