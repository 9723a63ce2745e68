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
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

from sdmesh.language import functions
from sdmesh.language.limits import LimitExceeded, Work
from sdmesh.language.policy import AGENT_READS_NOTHING, LOCAL, ResolutionPolicy
from sdmesh.language.source import Location, Reporter
from sdmesh.language.values import (
    NULL,
    TBD,
    Apply,
    Attr,
    ComponentDescription,
    Part,
    Placement,
    Reference,
)

CD = ComponentDescription

#: Longest chain of references or prototypes followed before giving up (guards the stack).
MAX_CHAIN = 100
#: Most attributes the resolver may copy while extending and linking. Each ``extends`` and
#: each link to a description copies it, so a few hundred bytes that extend twice per level
#: would ask for 2**levels copies (seconds, then memory, on an agent's event loop). The
#: 1,000-VM bench pool (bench/pool_mesh.py) copies about 7,300; a VM with disks and networks
#: about 60: this is far above any real pool, and reached in well under a second.
MAX_COMPONENTS = 250_000

#: Attributes the runtime adds to every component; LAZY links to them are not typos.
RUNTIME_ATTRIBUTES: Final = frozenset(
    {"sfHost", "sfProcess", "sfParent", "sfProcessComponentName", "sfCompleteName", "sfPool"}
)


class _Poison:
    """Stands for a value whose resolution already failed, so errors don't cascade."""

    def __repr__(self) -> str:
        return "<error>"


POISON: Final = _Poison()


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


class ResolveFailure(Exception):
    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


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


class Resolver:
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
        self._typing: list[CD] = []
        # Attributes being linked right now (ids are safe: these objects are alive).
        self._linking: list[tuple[CD, str]] = []
        self._linking_keys: set[tuple[int, str]] = set()
        self._next = functions.make_next()
        #: Called for each description just before the link phase links its attributes (the
        #: schema checker: SmartFrog checks a component's schema where its schema attribute
        #: sits, which is before the component's own attributes).
        self.before_linking: Callable[[CD], None] | None = None

    # ======================================================================== type phase
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

    # ======================================================================= place phase
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

    # ======================================================================== link phase
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

    def _apply(self, apply: Apply, holder: CD) -> object:
        args = apply.args
        args.parent = holder
        function_name = apply.function
        if function_name == "APPLY":
            named = args.get("sfFunctionClass")
            if not isinstance(named, str):
                raise ResolveFailure("APPLY needs an sfFunctionClass string", apply.location)
            function_name = named
        return self._evaluate(function_name, args, apply.location, apply)

    def _check_assertions(self, description: CD, holder: CD) -> object:
        """SmartFrog's ``Assertions``: every attribute not named ``sf...`` must link to
        true; one with a LAZY part is checked at run time. The assertion becomes ``true``."""
        failed: list[str] = []
        for name in list(description.attrs):
            if name.startswith("sf") or name == "phase.function":
                continue
            value = self.value_of(description, name)
            if value is POISON:
                return POISON
            if is_lazy(value):
                continue
            if value is not True:
                if value is False:
                    failed.append(f"'{name}' is false")
                else:
                    described = f"{functions.type_name(value)} {functions.to_text(value)}"
                    failed.append(f"'{name}' is {described}, not a Boolean")
        if failed:
            raise ResolveFailure(
                f"assertion failed in {node_label(holder)}: " + "; ".join(failed),
                description.location,
            )
        return True

    def _apply_template(self, description: CD, holder: CD) -> object:
        function_name = description.get("sfFunctionClass")
        if not isinstance(function_name, str):
            action = description.get("phase.function")
            if isinstance(action, str) and not action.endswith(("ConstructFunction", "sdmesh")):
                raise ResolveFailure(
                    f"phase.function names the Java phase action '{action}'; sdmesh runs only "
                    "functions (sfFunctionClass), schemas and assertions",
                    description.location,
                )
            raise ResolveFailure(
                "a function description needs an sfFunctionClass string", description.location
            )
        if description.get("sfFunctionLazy") is True:  # evaluate at run time
            return Apply(function_name, description, description.location, lazy=True)
        return self._evaluate(function_name, description, description.location, None)

    def _evaluate(
        self, function_name: str, args: CD, location: Location, apply: Apply | None
    ) -> object:
        canonical = functions.canonical_name(function_name)
        function = self._next if canonical == "Next" else functions.lookup(function_name)
        if canonical == "Ref":
            return self._ref(args, location)
        if function is None:
            raise ResolveFailure(f"unknown function '{function_name}'", location)
        values: list[tuple[str, object]] = []
        lazy = False
        for name in list(args.attrs):
            if name in functions.CONTROL_ATTRIBUTES:
                continue
            value = self.value_of(args, name)
            if value is POISON:
                return POISON
            if is_lazy(value):
                lazy = True
            values.append((name, value))
        if lazy:
            # A function with a LAZY argument is evaluated at run time (LAZY propagation).
            return Apply(apply.function if apply else function_name, args, location, lazy=True)
        self.work.check_arguments([value for _, value in values])
        try:
            result = function(values)
        except functions.FunctionError as exc:
            raise ResolveFailure(str(exc), location) from None
        self.work.create(result)
        return result

    def _ref(self, args: CD, location: Location) -> object:
        """SmartFrog's ``ref``: the reference written as the string ``reference``, linked
        from where the function is applied (or kept LAZY with ``lazy true``)."""
        text = self.value_of(args, "reference") if "reference" in args.attrs else None
        if not isinstance(text, str) or not text:
            raise ResolveFailure("ref needs a 'reference' string", location)
        parts: list[Part] = []
        for index, step in enumerate(text.split(":")):
            step = step.strip()
            if step in ("ROOT", "PARENT", "THIS"):
                parts.append(Part(step))
            elif step:
                parts.append(Part("ATTRIB" if index == 0 else "HERE", step, plain=True))
        if not parts:
            raise ResolveFailure(f"ref: '{text}' is not a reference", location)
        lazy = args.get("lazy") is True
        reference = Reference(tuple(parts), location, lazy)
        if lazy:
            return reference
        holder = args.parent if args.parent is not None else args
        try:
            return self._link_reference(reference, holder)
        except ResolveFailure:
            if args.get("returnNULLOnException") is True:
                return NULL
            raise

    # ==================================================================== reference walk
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


# ============================================================================ helpers
def node_label(cd: CD) -> str:
    return cd.path()


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
