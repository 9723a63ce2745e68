"""The description model: component descriptions, attributes, references, function applications.

A :class:`ComponentDescription` (CD) is an ordered mapping of attribute names to immutable
:class:`Attr` entries. Python dicts keep insertion order and keep a key's position when its
value is replaced, which is exactly SmartFrog's ordered-hashtable ``put``: overriding an
attribute keeps its first position. ``Attr`` entries are immutable so prototypes and their
copies can share them; phases replace entries instead of mutating them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sdmesh.language.source import Location


class Long(int):
    """A SmartFrog Long (``5L``): kept distinct from Integer for schemas and printing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}L"


class Float32(float):
    """A SmartFrog Float (``1.5f``): kept distinct from Double for schemas and printing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{float(self)!r}f"


class _Null:
    """SmartFrog's single ``NULL`` value (SFNull)."""

    _instance: _Null | None = None

    def __new__(cls) -> _Null:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NULL"

    def __reduce__(self) -> str:
        return "NULL"


NULL: Final = _Null()


class TBD:
    """``TBD``: a value that must be supplied before deployment (an error if it survives)."""

    __slots__ = ("location",)

    def __init__(self, location: Location) -> None:
        self.location = location

    def __repr__(self) -> str:
        return "TBD"


@dataclass(frozen=True, slots=True)
class Part:
    """One step of a reference.

    ``kind`` is ATTRIB, HERE, PARENT, ROOT, THIS, PROCESS, HOST, PROPERTY, IPROPERTY,
    ENVPROPERTY, IENVPROPERTY or CONSTANT. ``plain`` records that the user wrote a bare word
    (ATTRIB as first part, HERE later), so references print back the way they were written.
    """

    kind: str
    name: str | None = None
    plain: bool = False

    def __str__(self) -> str:
        if self.plain:
            assert self.name is not None
            return _quote_name(self.name)
        if self.name is None:
            return self.kind
        return f"{self.kind} {_quote_name(self.name)}"


def _quote_name(name: str) -> str:
    from sdmesh.language.render import format_name

    return format_name(name)


_MISSING: Final = object()


@dataclass(frozen=True, slots=True, eq=False)
class Reference:
    """A link to another value: resolved at link time, or at run time when ``lazy``.

    ``data`` references (``DATA a:b``) are values in their own right and never resolved.
    ``optional`` references (``OPTIONAL(default) a:b``) yield ``default`` when the path
    does not exist.
    """

    parts: tuple[Part, ...]
    location: Location
    lazy: bool = False
    data: bool = False
    optional: bool = False
    default: object = _MISSING

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def as_lazy(self) -> Reference:
        return Reference(self.parts, self.location, True, self.data, self.optional, self.default)

    def path(self) -> str:
        """The reference as written, in canonical form, without LAZY/DATA/OPTIONAL."""
        return ":".join(str(part) for part in self.parts)

    def canonical(self) -> str:
        """The reference as written, in canonical form, with OPTIONAL but no LAZY/DATA."""
        text = self.path()
        if self.optional:
            if self.has_default:
                from sdmesh.language.render import format_value

                return f"OPTIONAL({format_value(self.default)}) {text}"
            return f"OPTIONAL {text}"
        return text

    def __repr__(self) -> str:
        prefix = "LAZY " if self.lazy else "DATA " if self.data else ""
        return f"<{prefix}{self.canonical()}>"


class Apply:
    """A function application: an operator, ``IF``, a template function or ``APPLY {...}``.

    Arguments live in a CD (``args``) whose parent is the description holding the
    application, as in SmartFrog where operators desugar into a nested description:
    references inside resolve from that generated level upwards.
    """

    __slots__ = ("args", "function", "lazy", "location")

    def __init__(
        self, function: str, args: ComponentDescription, location: Location, lazy: bool = False
    ) -> None:
        self.function = function
        self.args = args
        self.location = location
        self.lazy = lazy

    def __repr__(self) -> str:
        return f"<apply {self.function} {list(self.args.attrs)}>"


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute entry: value, tags (``[sfFinal]``...) and where it was written."""

    value: object
    tags: frozenset[str]
    location: Location

    def with_value(self, value: object) -> Attr:
        return Attr(value, self.tags, self.location)


@dataclass(frozen=True, slots=True)
class Placement:
    """``a:b:name value``: an attribute to move into ``a:b`` during the place phase."""

    path: tuple[str, ...]
    name: str
    attr: Attr


class ComponentDescription:
    """An ordered set of attributes; ``eager`` descriptions are deployed as children.

    ``prototypes`` holds the unresolved ``extends`` list until the type phase merges it;
    ``None`` means the description is fully typed.
    """

    __slots__ = (
        "attrs",
        "complete",
        "eager",
        "extends",
        "location",
        "parent",
        "placements",
        "prototypes",
    )

    def __init__(
        self,
        location: Location,
        parent: ComponentDescription | None = None,
        eager: bool = True,
    ) -> None:
        self.attrs: dict[str, Attr] = {}
        self.parent = parent
        self.eager = eager
        self.location = location
        self.prototypes: list[object] | None = None
        self.placements: list[Placement] = []
        #: Names of the prototypes this description extends, for messages and ``kind``.
        self.extends: tuple[str, ...] = ()
        #: Set once this description and everything nested in it are type-resolved.
        self.complete = False

    def get(self, name: str, default: object = None) -> object:
        attr = self.attrs.get(name)
        return default if attr is None else attr.value

    def __contains__(self, name: str) -> bool:
        return name in self.attrs

    def __iter__(self) -> Iterator[str]:
        return iter(self.attrs)

    def children(self) -> Iterator[tuple[str, ComponentDescription]]:
        """Eager child descriptions in attribute order: what a Compound deploys."""
        for name, attr in self.attrs.items():
            value = attr.value
            if type(value) is ComponentDescription and value.eager:
                yield name, value

    def ancestors(self) -> Iterator[ComponentDescription]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def root(self) -> ComponentDescription:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def name_in_parent(self) -> str | None:
        if self.parent is None:
            return None
        for name, attr in self.parent.attrs.items():
            if attr.value is self:
                return name
        return None

    def path(self) -> str:
        """Colon-separated name from the root, e.g. ``sfConfig:pool:smartDomain1``."""
        names: list[str] = []
        node: ComponentDescription | None = self
        while node is not None and node.parent is not None:
            names.append(node.name_in_parent() or "?")
            node = node.parent
        return ":".join(reversed(names)) or "ROOT"

    def __repr__(self) -> str:
        flag = "" if self.eager else "DATA "
        return f"<CD {flag}{list(self.attrs)}>"
