"""Helpers shared by the hypervisor integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdmesh.hypervisor.spec import DomainSpec, KernelBoot, SdmeshMetadata

MakeHost = Callable[..., str]


def vm(name: str, memory_mib: int = 64, vcpus: int = 1, **kw: Any) -> DomainSpec:
    kw.setdefault("boot", KernelBoot("/boot/vmlinuz"))
    return DomainSpec(name=name, memory_mib=memory_mib, vcpus=vcpus, **kw)


def meta(pool: str, path: str, generation: int = 1) -> SdmeshMetadata:
    return SdmeshMetadata(pool, path, generation, "sha256:" + f"{generation:02x}" * 32)
