"""Which implementation runs a leaf, by its ``sfClass``."""

from __future__ import annotations

from sdmesh.components.context import HostContext
from sdmesh.components.policy import SHELL_CLASSES, PolicyRefused, needs_shell
from sdmesh.components.shell import (
    InertComponent,
    RefusedComponent,
    ScriptComponent,
    ShellComponent,
)
from sdmesh.components.storage import STORAGE_CLASSES, StorageComponent
from sdmesh.components.vm import VirtualMachineComponent
from sdmesh.lifecycle.model import Node
from sdmesh.runner.app import (
    Component,
    ComponentError,
    ComponentFactory,
    EndedCallback,
)

SHELLS = frozenset({"org.smartfrog.services.shellscript.SFScriptExecutionImpl"})
SCRIPTS = frozenset({"org.smartfrog.services.shellscript.SFScriptImpl"})
INERT = frozenset({"sdmesh.components.Scheduler"})
VIRTUAL_MACHINE = "sdmesh.components.VirtualMachine"


def component_factory(context: HostContext) -> ComponentFactory:
    def create(
        node: Node, root: Node, components: dict[str, Component], ended: EndedCallback
    ) -> Component:
        sf_class = node.description.get("sfClass")
        if sf_class == VIRTUAL_MACHINE:
            made: dict[str, object] = components  # type: ignore[assignment]
            return VirtualMachineComponent(node, root, context, made, ended)
        if isinstance(sf_class, str) and sf_class in STORAGE_CLASSES:
            return StorageComponent(node, root, context, STORAGE_CLASSES[sf_class])
        if sf_class in SHELL_CLASSES and not context.policy.allow_shell:
            if not needs_shell(node.description):
                return InertComponent()  # an idle interpreter nobody talks to: not started
            try:  # before anything runs, on this host, whoever signed or submitted it
                context.policy.check_shell(node.path)
            except PolicyRefused as error:
                return RefusedComponent(str(error))
        if sf_class in SHELLS:
            return ShellComponent(node)
        if sf_class in SCRIPTS:
            return ScriptComponent(node, root, ended)
        if sf_class in INERT:
            return InertComponent()
        raise ComponentError(
            f"sdmesh has no implementation of sfClass {sf_class!r} "
            "(see 'sdmesh describe' for the components it runs)"
        )

    return create
