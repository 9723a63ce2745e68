"""The role a component needs, by its ``sfClass``: what a signer must hold for a host to run it.

Shell components run commands as the agent's user (root), so they need ``admin``; VMs and
storage change what runs in the cluster but stay inside libvirt and the host's allow-lists, so
they need ``operate``. Deny by default: a class this table does not know needs ``admin`` (and
the host has no implementation for it anyway). Kept here, below the components themselves, so
the API, the CLI and every host decide alike; tests/unit/trust checks it against
``sdmesh.components.registry``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from sdmesh.trust.roles import Role

#: Components that execute commands on the host.
SHELL_CLASSES: Final = frozenset(
    {
        "org.smartfrog.services.shellscript.SFScriptExecutionImpl",  # BashShell
        "org.smartfrog.services.shellscript.SFScriptImpl",  # Script
    }
)
#: Components that stay within libvirt, the storage backends and the mesh's placement.
OPERATE_CLASSES: Final = frozenset(
    {
        "sdmesh.components.VirtualMachine",
        "sdmesh.components.Scheduler",
        "sdmesh.components.Schedulee",
        "sdmesh.storage.Qcow2OverlayBackend",
        "sdmesh.storage.LoopbackStorageBackend",
        "sdmesh.storage.LVMStorageBackend",
    }
)
#: SmartFrog's containers and workflow combinators: they order their children and run nothing
#: themselves.
_CONTAINER_PREFIXES: Final = (
    "org.smartfrog.sfcore.compound.",
    "org.smartfrog.sfcore.workflow.",
)


def required_role(kind: str) -> Role:
    """The role a signer needs for a host to run a component of ``sfClass`` ``kind``."""
    if kind in SHELL_CLASSES:
        return Role.ADMIN
    if kind in OPERATE_CLASSES or kind.startswith(_CONTAINER_PREFIXES):
        return Role.OPERATE
    return Role.ADMIN


def role_for_all(kinds: Iterable[str]) -> Role:
    """The role a whole descriptor needs: the highest any of its components needs (a
    descriptor with no component still needs ``operate``: it creates a pool)."""
    return max((required_role(kind) for kind in kinds), default=Role.OPERATE)


#: Prototype names of the built-in shell components (shellscript/components.sf), as a
#: submitter's tool reports them in ``kinds`` (path -> prototype).
SHELL_KINDS: Final = frozenset({"Shell", "BashShell", "Script", "Exec", "ShellExec", "BashExec"})


def required_role_for_kinds(kinds: Mapping[str, str]) -> Role:
    """The role a pool with these components (path -> prototype name) needs at submission."""
    if any(kind in SHELL_KINDS for kind in kinds.values()):
        return Role.ADMIN
    return Role.OPERATE


def required_role_for(text: str, kinds: Mapping[str, str]) -> Role:
    """What the API asks of a submitter: ``required_role_for_kinds``, and ``admin`` if the
    resolved descriptor ``text`` names a shell ``sfClass`` anywhere. Two views, because either
    could be spoofed alone: ``kinds`` comes from the client, while a prototype that extends
    ``Script`` under another name still carries the shell ``sfClass`` in the resolved text. A
    string that merely contains the class name also asks for ``admin``: safe side. Hosts
    check again, leaf by leaf, with ``required_role`` on the real ``sfClass``."""
    if any(name in text for name in SHELL_CLASSES):
        return Role.ADMIN
    return required_role_for_kinds(kinds)
