"""The component -> role table covers every class a host can run."""

from __future__ import annotations

from sdmesh.components.registry import INERT, SCRIPTS, SHELLS, VIRTUAL_MACHINE
from sdmesh.components.storage import STORAGE_CLASSES
from sdmesh.lifecycle.behaviours import BEHAVIOURS
from sdmesh.trust.components import SHELL_CLASSES, required_role, role_for_all
from sdmesh.trust.roles import Role


def test_shell_components_need_admin() -> None:
    assert SHELLS | SCRIPTS == SHELL_CLASSES
    for kind in SHELLS | SCRIPTS:
        assert required_role(kind) is Role.ADMIN


def test_vms_storage_and_schedulers_need_operate() -> None:
    for kind in {VIRTUAL_MACHINE, *STORAGE_CLASSES, *INERT}:
        assert required_role(kind) is Role.OPERATE, kind


def test_containers_need_operate_and_unknown_classes_admin() -> None:
    for kind in BEHAVIOURS:
        assert required_role(kind) is Role.OPERATE, kind
    assert required_role("com.example.Backdoor") is Role.ADMIN
    assert required_role("") is Role.ADMIN


def test_a_descriptor_needs_its_highest_component() -> None:
    assert role_for_all([]) is Role.OPERATE
    assert role_for_all([VIRTUAL_MACHINE]) is Role.OPERATE
    assert role_for_all([VIRTUAL_MACHINE, *SCRIPTS]) is Role.ADMIN
