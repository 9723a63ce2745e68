"""What copying may create during resolution, and the copies themselves.

Each ``extends`` and each link to a description copies it (SmartFrog's semantics), so the
resolver charges every copied attribute and description to a :class:`Budget` and unwinds with
:class:`TreeTooLarge` once it runs out (shared/spec/sf-language.md §4, §7).
"""

from __future__ import annotations

from sdmesh.language.source import Location
from sdmesh.language.values import Apply, Attr, ComponentDescription, Placement

CD = ComponentDescription

#: Most attributes the resolver may copy while extending and linking. Each ``extends`` and
#: each link to a description copies it, so a few hundred bytes that extend twice per level
#: would ask for 2**levels copies (seconds, then memory, on an agent's event loop). The
#: 1,000-VM bench pool (bench/pool_mesh.py) copies about 7,300; a VM with disks and networks
#: about 60: this is far above any real pool, and reached in well under a second.
MAX_COMPONENTS = 250_000


class TreeTooLarge(Exception):
    """Unwinds resolution once the copies pass ``MAX_COMPONENTS``; located where it happened."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.location: Location | None = None

    @property
    def message(self) -> str:
        return (
            f"the resolved tree exceeds {self.limit:,} components (attributes and "
            "descriptions): every extends and every link to a description copies it, so "
            "descriptions that extend one another several times multiply; extend each one "
            "fewer times, or refer to it with LAZY"
        )


class Budget:
    """What copying may still create (``MAX_COMPONENTS``); one per resolution."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int = MAX_COMPONENTS) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise TreeTooLarge(self.limit)


def copy_attr(attr: Attr, parent: CD, budget: Budget | None = None) -> Attr:
    """Copy an attribute for another description: immutable values are shared. Each copied
    attribute and description is charged to ``budget`` (TreeTooLarge when it runs out)."""
    if budget is not None:
        budget.spend(1)
    value = attr.value
    t = type(value)
    if t is CD:
        assert isinstance(value, CD)
        return Attr(copy_cd(value, parent, budget), attr.tags, attr.location)
    if t is Apply:
        assert isinstance(value, Apply)
        return Attr(_copy_apply(value, parent, budget), attr.tags, attr.location)
    if t is list:
        assert isinstance(value, list)
        copied = _copy_list(value, parent, budget)
        if copied is not value:
            return Attr(copied, attr.tags, attr.location)
    return attr


def copy_cd(source: CD, parent: CD | None, budget: Budget | None = None) -> CD:
    """Deep-copy a typed description under a new parent (charged to ``budget``)."""
    if budget is not None:
        budget.spend(1)
    copy = CD(source.location, parent, source.eager)
    copy.extends = source.extends
    copy.prototypes = source.prototypes
    copy.complete = source.complete
    copy.attrs = {name: copy_attr(attr, copy, budget) for name, attr in source.attrs.items()}
    if source.placements:
        copy.placements = [
            Placement(p.path, p.name, copy_attr(p.attr, copy, budget)) for p in source.placements
        ]
    return copy


def _copy_apply(apply: Apply, parent: CD, budget: Budget | None) -> Apply:
    return Apply(apply.function, copy_cd(apply.args, parent, budget), apply.location, apply.lazy)


def _copy_list(items: list[object], parent: CD, budget: Budget | None) -> list[object]:
    if not any(type(item) in (Apply, list, CD) for item in items):
        return items
    result: list[object] = []
    for item in items:
        t = type(item)
        if t is Apply:
            assert isinstance(item, Apply)
            result.append(_copy_apply(item, parent, budget))
        elif t is list:
            assert isinstance(item, list)
            result.append(_copy_list(item, parent, budget))
        elif t is CD:
            assert isinstance(item, CD)
            result.append(copy_cd(item, parent, budget))
        else:
            result.append(item)
    return result
