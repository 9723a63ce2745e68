"""What a resolution may read: the submitter's machine, or only what was sent (issue 11.5).

SmartFrog resolved descriptors where the user was; its daemons never read a file or a
variable for a submitter. sdmesh keeps that split. The CLI resolves with the user's files,
``-I`` roots and environment (:data:`LOCAL`). An agent resolves what reaches it with
:func:`agent_policy`: includes come from the built-in library and the files sent with the
descriptor, never from the agent's filesystem or working directory, and ``PROPERTY`` or
``ENVPROPERTY`` see only values sent with the submission: none of the agent's own, now or
at run time (a LAZY one would read the agent's environment when the pool deploys).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sdmesh.language.limits import DEFAULT_LIMITS, Limits
from sdmesh.language.values import Apply, ComponentDescription, Reference

#: Reference parts that read the resolving host's properties or environment.
HOST_READINGS = frozenset({"PROPERTY", "IPROPERTY", "ENVPROPERTY", "IENVPROPERTY"})


@dataclass(frozen=True)
class ResolutionPolicy:
    """Where one resolution may look, and its bounds."""

    #: Includes may come from the filesystem (absolute paths, the including file's directory,
    #: the working directory, ``-I`` and ``SDMESH_PATH`` roots).
    host_files: bool = True
    #: ``PROPERTY``/``ENVPROPERTY`` see this process's properties and environment.
    host_environment: bool = True
    #: Include files sent with the descriptor: name -> text.
    sent_files: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS


#: The CLI's resolution: the user's files and environment, default bounds.
LOCAL = ResolutionPolicy()

#: Why an agent refuses to read for a submitter (the end of its error messages).
AGENT_READS_NOTHING = (
    "an agent reads no file and no variable for a submitter: submit with the sdmesh CLI, "
    "which resolves includes, PROPERTY and ENVPROPERTY where you are"
)


def agent_policy(
    sent_files: Mapping[str, str] | None = None, limits: Limits = DEFAULT_LIMITS
) -> ResolutionPolicy:
    """The policy of a descriptor that reached an agent."""
    return ResolutionPolicy(
        host_files=False, host_environment=False, sent_files=dict(sent_files or {}), limits=limits
    )


def include_key(name: str) -> str | None:
    """An include name as a relative POSIX path (``file:`` and leading ``/`` dropped, as
    SmartFrog's class-path lookup does); None for a name that climbs out (``..``)."""
    if name.startswith("file:"):
        name = name[len("file:") :]
    name = name.lstrip("/")
    if not name or "\\" in name or "\x00" in name:
        return None
    parts = name.split("/")
    if any(part == ".." for part in parts):
        return None
    return posixpath.normpath(name)


def host_readings(root: ComponentDescription) -> Iterator[Reference]:
    """Every reference left in a resolved tree (LAZY ones, in attributes, vectors and
    function arguments) that would read the host's properties or environment."""
    stack: list[object] = [root]
    seen: set[int] = set()  # vectors are shared (a link to a vector does not copy it)
    while stack:
        value = stack.pop()
        t = type(value)
        if t is ComponentDescription:
            assert isinstance(value, ComponentDescription)
            stack.extend(attr.value for attr in value.attrs.values())
        elif t is Apply:
            assert isinstance(value, Apply)
            stack.append(value.args)
        elif t is list and id(value) not in seen:
            assert isinstance(value, list)
            seen.add(id(value))
            stack.extend(value)
        elif t is Reference:
            assert isinstance(value, Reference)
            if not value.data and any(part.kind in HOST_READINGS for part in value.parts):
                yield value
