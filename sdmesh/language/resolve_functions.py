"""The function phase, folded into link (shared/spec/sf-language.md §4, §7): functions
(``APPLY``, ``ref``, ``Next``, the catalogue of functions.py), descriptions carrying
``phase.function`` (function templates and SmartFrog's ``Assertions``) are evaluated when the
link phase reaches them; one with a LAZY argument is kept for run time.
"""

from __future__ import annotations

from sdmesh.language import functions
from sdmesh.language.resolve_base import (
    CD,
    POISON,
    ResolveFailure,
    ResolverState,
    is_lazy,
    node_label,
)
from sdmesh.language.source import Location
from sdmesh.language.values import NULL, Apply, Part, Reference


class FunctionPhase(ResolverState):
    """Evaluates functions, function templates and assertions where they are linked."""

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
