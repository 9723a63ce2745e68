"""The SmartFrog description language: parse, resolve, check and print descriptors.

Entry points are :func:`resolve_file` and :func:`resolve_text`; both return a
:class:`ResolvedDescriptor` or raise :class:`DescriptorError` carrying every located error.
Nothing here does I/O beyond reading the descriptor and its includes.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdmesh.language.limits import LimitExceeded
from sdmesh.language.loader import Loader
from sdmesh.language.parser import NestingTooDeep
from sdmesh.language.policy import LOCAL, ResolutionPolicy, host_readings
from sdmesh.language.render import to_json, to_sf
from sdmesh.language.resolver import POISON, Resolver, TreeTooLarge, function_phase_kind
from sdmesh.language.schema import SchemaChecker
from sdmesh.language.source import (
    DescriptorError,
    Diagnostic,
    Location,
    Reporter,
    TooManyErrors,
)
from sdmesh.language.values import ComponentDescription, Reference

RECURSION_LIMIT = 10_000

__all__ = [
    "ComponentDescription",
    "DescriptorError",
    "Diagnostic",
    "ResolutionPolicy",
    "ResolvedDescriptor",
    "resolve_file",
    "resolve_text",
]


@dataclass
class ResolvedDescriptor:
    """A resolved ``sfConfig`` tree, ready to deploy, plus any warnings."""

    name: str
    root: ComponentDescription
    warnings: list[Diagnostic] = field(default_factory=list)
    _digest: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> object:
        return to_json(self.root)

    def to_sf(self) -> str:
        return to_sf(self.root)

    def digest(self) -> str:
        """A stable hash of the resolved tree: equal descriptors deploy equal pools.

        Computed once, over the canonical text (it keeps what JSON drops: Long vs Integer,
        tags, DATA descriptions)."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.to_sf().encode()).hexdigest()
        return self._digest


def resolve_file(
    path: str | Path,
    include_dirs: Sequence[Path] = (),
    properties: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    policy: ResolutionPolicy = LOCAL,
) -> ResolvedDescriptor:
    reporter = Reporter()
    loader = Loader(reporter, list(include_dirs), policy=policy)
    load = lambda: loader.load_file(path)  # noqa: E731
    return _resolve(str(path), reporter, load, properties, environment, policy)


def resolve_text(
    text: str,
    name: str = "<descriptor>",
    include_dirs: Sequence[Path] = (),
    properties: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    policy: ResolutionPolicy = LOCAL,
) -> ResolvedDescriptor:
    """Resolve text given directly; ``policy`` says what it may read (an agent passes
    :func:`sdmesh.language.policy.agent_policy`: nothing of the host's)."""
    reporter = Reporter()
    loader = Loader(reporter, list(include_dirs), cwd, policy)
    load = lambda: loader.load_text(name, text)  # noqa: E731
    return _resolve(name, reporter, load, properties, environment, policy)


def _resolve(
    name: str,
    reporter: Reporter,
    load: object,
    properties: Mapping[str, str] | None,
    environment: Mapping[str, str] | None,
    policy: ResolutionPolicy = LOCAL,
) -> ResolvedDescriptor:
    assert callable(load)
    config: ComponentDescription | None = None
    # Chains of links and prototypes recurse a few frames per step; the guards (MAX_CHAIN,
    # MAX_NESTING) stop hostile input well below this limit.
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, RECURSION_LIMIT))
    try:
        root = load()
        if root is None:  # unreadable, binary or oversized: nothing to resolve
            raise DescriptorError(reporter.diagnostics)
        assert isinstance(root, ComponentDescription)
        resolver = Resolver(reporter, properties, environment, policy=policy)
        resolver.type_tree(root)
        resolver.place_tree(root)
        config = _select_sfconfig(root, reporter, resolver)
        if config is not None:
            checker = SchemaChecker(resolver, reporter)
            resolver.before_linking = checker.check_resolvable
            resolver.link_tree(config)
            resolver.work.check_tree(config)
            if not policy.host_environment:
                _refuse_host_readings(config, reporter)
            checker.check_tree(config)
            _strip_temporary(config)
    except TooManyErrors:
        pass
    except NestingTooDeep:
        pass
    except (TreeTooLarge, LimitExceeded) as error:  # one error says it all
        with contextlib.suppress(TooManyErrors):
            reporter.error(error.message, error.location)
    except RecursionError:
        reporter.diagnostics.append(
            Diagnostic("error", f"{name}: structure nested too deeply to process", None)
        )
        reporter.error_count += 1
    finally:
        sys.setrecursionlimit(old_limit)
    reporter.raise_if_failed()
    assert config is not None
    config.parent = None  # at run time ROOT is the deployed sfConfig (the moving ROOT)
    warnings = [d for d in reporter.sorted() if d.severity != "error"]
    return ResolvedDescriptor(name, config, warnings)


def _refuse_host_readings(config: ComponentDescription, reporter: Reporter) -> None:
    """A LAZY PROPERTY or ENVPROPERTY left in the tree would read the agent's own values
    when the pool deploys; an agent's policy refuses it here."""
    for reference in host_readings(config):
        reporter.error(
            f"LAZY {reference.path()} would read this agent's properties or environment when "
            "the pool deploys; agents lend neither: resolve it where you submit (drop LAZY)",
            reference.location,
        )


def _select_sfconfig(
    root: ComponentDescription, reporter: Reporter, resolver: Resolver
) -> ComponentDescription | None:
    """SmartFrog's sfConfig phase: after the function phase, ``sfConfig`` must be a
    description; given as a link (``sfConfig myTemplate;``) it is resolved through it."""
    attr = root.attrs.get("sfConfig")
    if attr is None:
        reporter.error(
            "no sfConfig: a descriptor deploys its top-level 'sfConfig' component "
            "(e.g. sfConfig extends Compound { ... })",
            Location(root.location.source, 0),
        )
        return None
    value = attr.value
    if isinstance(value, Reference) and not (value.lazy or value.data):
        value = resolver.value_of(root, "sfConfig")
        if value is POISON:
            return None
    if isinstance(value, ComponentDescription) and function_phase_kind(value) == "function":
        function = value.get("sfFunctionClass")
        named = f" ({function})" if isinstance(function, str) and function else ""
        reporter.error(
            f"sfConfig is a function{named}: the function phase turns it into its value, "
            "so there is no component description to deploy",
            attr.location,
        )
        return None
    if not isinstance(value, ComponentDescription):
        reporter.error(
            "sfConfig must be a component description (sfConfig extends ... { })", attr.location
        )
        return None
    return value


def _strip_temporary(cd: ComponentDescription) -> None:
    """Drop ``[sfTemp]`` attributes: they exist only during resolution."""
    stack = [cd]
    while stack:
        node = stack.pop()
        for name in [n for n, a in node.attrs.items() if "sfTemp" in a.tags]:
            del node.attrs[name]
        stack.extend(
            a.value for a in node.attrs.values() if isinstance(a.value, ComponentDescription)
        )
