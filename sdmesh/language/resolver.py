"""The resolution phases, in SmartFrog's order (shared/spec/sf-language.md §4, §6, §7).

1. **type**: expand every ``extends`` over the whole file. Prototypes are merged left to right;
   an attribute that already exists keeps its position and takes the new value; tags are
   unioned. Prototype references resolve from the description being built (which is empty at
   that moment), so effectively from its enclosing scope.
2. **place**: move ``a:b:name value`` attributes into their targets, repeating passes while
   one succeeds.
3. **function** is folded into link: a description carrying ``phase.function`` is applied
   when the link phase reaches it.
4. **sfConfig**: only ``sfConfig`` is link-resolved; the rest are building blocks.
5. **link**: eager references are replaced by their values where the attribute has landed;
   LAZY ones are kept for run time, and a link through a LAZY value becomes LAZY itself.

The resolver is pure: it takes a parsed ROOT description and returns the resolved
``sfConfig`` or collects located errors.

Each phase is a mixin in its own module, over the shared state of resolve_base.py:

- resolve_types.py: the type phase (``extends``);
- resolve_place.py: the place phase (``a:b:name``);
- resolve_references.py: following a reference's parts;
- resolve_link.py: the link phase (and the TBD and LAZY checks after it);
- resolve_functions.py: the function phase, folded into link;
- resolve_copy.py: copies of descriptions, charged to the component budget.

Callers run the phases in order: :meth:`Resolver.type_tree`, :meth:`Resolver.place_tree`,
then :meth:`Resolver.link_tree` on the selected ``sfConfig``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from sdmesh.language import functions
from sdmesh.language.limits import Work
from sdmesh.language.policy import LOCAL, ResolutionPolicy
from sdmesh.language.resolve_base import (
    ASSERTIONS_ACTION,
    MAX_CHAIN,
    POISON,
    SCHEMA_ACTION,
    ResolveFailure,
    ResolverState,
    function_phase_kind,
    is_lazy,
    node_label,
)
from sdmesh.language.resolve_copy import (
    MAX_COMPONENTS,
    Budget,
    TreeTooLarge,
    copy_attr,
    copy_cd,
)
from sdmesh.language.resolve_functions import FunctionPhase
from sdmesh.language.resolve_link import RUNTIME_ATTRIBUTES, LinkPhase
from sdmesh.language.resolve_place import PlacePhase
from sdmesh.language.resolve_references import ReferenceWalk
from sdmesh.language.resolve_types import TypePhase
from sdmesh.language.source import Reporter

__all__ = [
    "ASSERTIONS_ACTION",
    "MAX_CHAIN",
    "MAX_COMPONENTS",
    "POISON",
    "RUNTIME_ATTRIBUTES",
    "SCHEMA_ACTION",
    "Budget",
    "ResolveFailure",
    "Resolver",
    "ResolverState",
    "TreeTooLarge",
    "copy_attr",
    "copy_cd",
    "default_properties",
    "function_phase_kind",
    "is_lazy",
    "node_label",
]


def default_properties() -> dict[str, str]:
    """What ``PROPERTY`` references see: Java's well-known system properties, mapped."""
    return {
        "user.name": os.environ.get("USER", "root"),
        "user.home": os.path.expanduser("~"),
        "user.dir": os.getcwd(),
        "os.name": "Linux",
        "os.arch": os.uname().machine,
        "file.separator": "/",
        "path.separator": ":",
        "line.separator": "\n",
        "java.io.tmpdir": os.environ.get("TMPDIR", "/tmp"),
        "host.name": socket.gethostname(),
    }


class Resolver(TypePhase, PlacePhase, ReferenceWalk, LinkPhase, FunctionPhase):
    """Runs the phases over one ROOT description."""

    def __init__(
        self,
        reporter: Reporter,
        properties: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        max_components: int = MAX_COMPONENTS,
        policy: ResolutionPolicy = LOCAL,
    ) -> None:
        self.reporter = reporter
        self.budget = Budget(max_components)
        self.policy = policy
        self.work = Work(policy.limits)  # bounds on values and steps (limits.py)
        # Under an agent's policy only values sent with the submission, none of the host's.
        self.properties = dict(default_properties()) if policy.host_environment else {}
        if properties:
            self.properties.update(properties)
        if environment is None:
            environment = os.environ if policy.host_environment else {}
        self.environment = environment
        self._typing = []
        self._linking = []
        self._linking_keys = set()
        self._next = functions.make_next()
        self.before_linking = None  # the schema checker sets it (see ResolverState)
