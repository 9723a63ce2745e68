"""Which role a pool's components need: shell components run commands as root on a host, so
they need ``admin``; everything else (VMs, storage, workflow containers) needs ``operate``.

One small table, shared by the API (who may submit what) and by whatever checks signatures on
the hosts. Two views of a component are checked, because either could be spoofed alone: the
prototype names a submitter's tool reports (``kinds``: path -> ``Script``...), and the
``sfClass`` values in the resolved descriptor's text, which decide what a host really runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdmesh.trust.roles import Role

#: Prototype names of the built-in shell components (shellscript/components.sf).
SHELL_KINDS = frozenset({"Shell", "BashShell", "Script", "Exec", "ShellExec", "BashExec"})
#: The ``sfClass`` values a host runs as shell commands (sdmesh.components.registry).
SHELL_CLASSES = frozenset(
    {
        "org.smartfrog.services.shellscript.SFScriptExecutionImpl",
        "org.smartfrog.services.shellscript.SFScriptImpl",
    }
)
#: What any other component needs.
DEFAULT_ROLE = Role.OPERATE


def required_role(kinds: Mapping[str, str]) -> Role:
    """The role a pool with these components (path -> prototype name) needs."""
    if any(kind in SHELL_KINDS for kind in kinds.values()):
        return Role.ADMIN
    return DEFAULT_ROLE


def required_role_for(text: str, kinds: Mapping[str, str]) -> Role:
    """``required_role(kinds)``, and ``admin`` if the resolved descriptor ``text`` names a
    shell ``sfClass`` anywhere. Conservative on purpose: a component that extends its own
    prototype built on ``Script`` reports another kind, but its ``sfClass`` is still in the
    text (resolved values are literal there); a string that merely contains the class name
    also asks for ``admin``, which errs on the safe side."""
    if any(name in text for name in SHELL_CLASSES):
        return Role.ADMIN
    return required_role(kinds)


__all__ = ["DEFAULT_ROLE", "SHELL_CLASSES", "SHELL_KINDS", "required_role", "required_role_for"]
