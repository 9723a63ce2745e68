"""What the resolution phases share: their vocabulary and the resolver's state.

The phases (type, place, reference walk, link, function) are mixins over
:class:`ResolverState`, each in its own module; :class:`~sdmesh.language.resolver.Resolver`
combines them. A phase asks another for work only through the operations declared here, so
the phase modules import this one and never each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Final

from sdmesh.language.functions import Function
from sdmesh.language.limits import Work
from sdmesh.language.policy import ResolutionPolicy
from sdmesh.language.resolve_copy import Budget
from sdmesh.language.source import Location, Reporter
from sdmesh.language.values import Apply, ComponentDescription, Reference

CD = ComponentDescription

#: Longest chain of references or prototypes followed before giving up (guards the stack).
MAX_CHAIN = 100


class _Poison:
    """Stands for a value whose resolution already failed, so errors don't cascade."""

    def __repr__(self) -> str:
        return "<error>"


POISON: Final = _Poison()


class ResolveFailure(Exception):
    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


#: ``phase.function`` values (SmartFrog's phase actions) that do not build a function.
SCHEMA_ACTION: Final = "ConstructSchema"
ASSERTIONS_ACTION: Final = "ConstructAssertions"


def function_phase_kind(cd: CD) -> str | None:
    """What SmartFrog's function phase makes of ``cd``: None (nothing), "function",
    "schema" (a schema, checked against its holder) or "assertions" (Booleans that must hold).

    SmartFrog's ``phase.function`` names a phase action class: ``ConstructFunction`` builds a
    function, ``ConstructSchema`` a schema and ``ConstructAssertions`` assertions (its
    ``predicates.sf``); only the first needs ``sfFunctionClass``."""
    attr = cd.attrs.get("phase.function")
    if attr is None:
        return "schema" if "phase.schema" in cd.attrs else None
    action = attr.value
    if isinstance(action, str):
        if action.endswith(SCHEMA_ACTION):
            return "schema"
        if action.endswith(ASSERTIONS_ACTION):
            return "assertions"
    return "function"


def is_lazy(value: object) -> bool:
    t = type(value)
    if t is Reference:
        assert isinstance(value, Reference)
        return value.lazy
    if t is Apply:
        assert isinstance(value, Apply)
        return value.lazy
    return False


def node_label(cd: CD) -> str:
    return cd.path()


class ResolverState(ABC):
    """One resolution's state, and what each phase offers the others."""

    reporter: Reporter
    #: What copying may still create (resolve_copy.py).
    budget: Budget
    policy: ResolutionPolicy
    #: Bounds on values and steps (limits.py).
    work: Work
    #: What ``PROPERTY`` and ``ENVPROPERTY`` references see.
    properties: dict[str, str]
    environment: Mapping[str, str]
    #: Descriptions whose prototypes are being merged right now (type phase).
    _typing: list[CD]
    #: Attributes being linked right now (ids are safe: these objects are alive).
    _linking: list[tuple[CD, str]]
    _linking_keys: set[tuple[int, str]]
    #: SmartFrog's ``Next``: its counter lives for one resolution.
    _next: Function
    #: Called for each description just before the link phase links its attributes (the
    #: schema checker: SmartFrog checks a component's schema where its schema attribute
    #: sits, which is before the component's own attributes).
    before_linking: Callable[[CD], None] | None

    # ------------------------------------------------------------ type phase (resolve_types)
    @abstractmethod
    def type_tree(self, cd: CD) -> None:
        """Type-resolve ``cd`` and everything nested in it (idempotent)."""

    @abstractmethod
    def ensure_typed(self, cd: CD) -> None:
        """Merge ``cd``'s prototypes into its attributes."""

    # ---------------------------------------------------- reference walk (resolve_references)
    @abstractmethod
    def _walk(self, reference: Reference, holder: CD, linking: bool) -> object:
        """Follow ``reference`` from ``holder``; in the type phase values are not linked."""

    # -------------------------------------------------------------- link phase (resolve_link)
    @abstractmethod
    def value_of(self, cd: CD, name: str) -> object:
        """The linked value of ``cd``'s attribute ``name``, resolving it once and in place."""

    @abstractmethod
    def _link_reference(self, reference: Reference, holder: CD) -> object:
        """The value an eager ``reference`` links to from ``holder``."""

    # ------------------------------------------------------ function phase (resolve_functions)
    @abstractmethod
    def _apply(self, apply: Apply, holder: CD) -> object:
        """The value of a function applied where ``holder`` holds it."""

    @abstractmethod
    def _check_assertions(self, description: CD, holder: CD) -> object:
        """``true`` when every assertion in ``description`` holds."""

    @abstractmethod
    def _apply_template(self, description: CD, holder: CD) -> object:
        """The value of a description carrying ``phase.function``."""
