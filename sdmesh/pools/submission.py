"""Turning a descriptor into a pool spec, on the CLI side and on the agent side alike.

The CLI resolves the descriptor where its include files are, and sends the resolved tree in
canonical SmartFrog syntax plus the prototype each component extended (canonical text keeps
values and LAZY links but not ``extends`` names). The agent resolves that text again, so
every agent holds the same tree with the same digest, and a hand-written request (curl, the
dashboard) works too: its descriptor is resolved against the built-in library.

On an agent, resolution follows :func:`sdmesh.language.policy.agent_policy`: the built-in
library and the files sent with the descriptor (``"includes"``: name -> text), none of the
agent's files or environment; the agent runs it in a worker it can stop
(:mod:`sdmesh.pools.resolve_worker`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdmesh.language import DescriptorError, ResolvedDescriptor, resolve_text
from sdmesh.language.policy import agent_policy, include_key
from sdmesh.pools.layout import LayoutError, layout, skeleton, walk
from sdmesh.pools.records import MAX_KIND_CHARS, PoolSpec, check_pool_id, is_kind

#: Below the API's 4 MiB request limit (sdmesh.agent.api_input), which also carries the JSON
#: around the descriptor and its escapes.
MAX_DESCRIPTOR_CHARS = 3 * 1024 * 1024


class SubmissionError(ValueError):
    """A submission that cannot become a pool; the message says where and why."""


def kinds_of(resolved: ResolvedDescriptor) -> dict[str, str]:
    """path -> the prototype each component extended (``XenDomain``, ``Compound``...)."""
    return {node.path: node.kind for node in walk(skeleton(resolved.root))}


def default_pool_name(source: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in Path(source).stem.lower()).strip("-")
    return f"{(stem or 'pool')[:50]}-{secrets.token_hex(3)}"


def request_body(
    resolved: ResolvedDescriptor, name: str | None, *, dry_run: bool = False
) -> dict[str, object]:
    """What the CLI posts to ``POST /v1/pools``."""
    return {
        "name": name or default_pool_name(resolved.name),
        "descriptor": resolved.to_sf(),
        "kinds": kinds_of(resolved),
        "dry_run": dry_run,
    }


def build_spec(body: Mapping[str, Any], submitted_by: str = "") -> PoolSpec:
    """A spec from a ``POST /v1/pools`` body; SubmissionError for anything wrong with it."""
    return build_spec_and_tree(body, submitted_by)[0]


def build_spec_and_tree(body: Mapping[str, Any], submitted_by: str = "") -> tuple[PoolSpec, Any]:
    """``build_spec``, and the resolved tree it checked (the agent caches it by digest rather
    than resolve the canonical text again)."""
    text = body.get("descriptor")
    if not isinstance(text, str) or not text.strip():
        raise SubmissionError("'descriptor' must be the descriptor's text")
    includes = _sent_includes(body.get("includes"))
    if len(text) + sum(len(k) + len(v) for k, v in includes.items()) > MAX_DESCRIPTOR_CHARS:
        raise SubmissionError(
            f"the descriptor is larger than {MAX_DESCRIPTOR_CHARS // (1024 * 1024)} MiB"
        )
    name = body.get("name") or default_pool_name("pool")
    if not isinstance(name, str):
        raise SubmissionError("'name' must be a string")
    try:
        check_pool_id(name)
    except ValueError as error:
        raise SubmissionError(str(error)) from None
    try:
        resolved = resolve_text(text, f"<pool {name}>", policy=agent_policy(includes))
    except DescriptorError as error:
        raise SubmissionError(_not_resolved(error)) from None
    try:
        layout(resolved.root)
    except LayoutError as error:
        raise SubmissionError(str(error)) from None
    kinds = kinds_of(resolved)
    kinds.update(_given_kinds(body.get("kinds"), kinds))
    spec = PoolSpec(name, resolved.to_sf(), resolved.digest(), kinds, submitted_by)
    return spec, resolved.root


def resolve_spec_tree(spec: PoolSpec) -> Any:
    """The tree of a spec resolved elsewhere (another agent), under the agent's policy;
    SubmissionError when it does not resolve, or resolves to another digest here."""
    try:
        resolved = resolve_text(spec.text, f"<pool {spec.pool}>", policy=agent_policy())
    except DescriptorError as error:
        raise SubmissionError(_not_resolved(error)) from None
    if resolved.digest() != spec.digest:
        raise SubmissionError(f"pool {spec.pool}: its descriptor resolves differently here")
    return resolved.root


def _not_resolved(error: DescriptorError) -> str:
    shown = "\n".join(d.format() for d in error.diagnostics[:20])
    return f"the descriptor does not resolve:\n{shown}"


def _given_kinds(value: object, kinds: Mapping[str, str]) -> dict[str, str]:
    """``"kinds"`` of a request (path -> prototype, as the submitter's tool saw it), for the
    components the descriptor has: each a bounded, printable name (they reach status, the
    dashboard and the spec every member decodes); SubmissionError (400) otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SubmissionError("'kinds' must map component paths to prototype names")
    given: dict[str, str] = {}
    for path, kind in value.items():
        if not isinstance(path, str) or path not in kinds:
            continue  # not a component of this descriptor: ignored, never stored
        if not is_kind(kind):
            raise SubmissionError(
                f"'kinds': the prototype of {path} must be at most {MAX_KIND_CHARS} printable "
                "characters"
            )
        given[path] = kind
    return given


def _sent_includes(value: object) -> dict[str, str]:
    """``"includes"``: the files a hand-written request sends with its descriptor."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SubmissionError("'includes' must map file names to their text")
    sent: dict[str, str] = {}
    for name, text in value.items():
        key = include_key(name)
        if key is None:
            raise SubmissionError(f"'includes': {name!r} is not a relative file name")
        sent[key] = text
    return sent
