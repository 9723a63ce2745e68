"""Errors of the hypervisor boundary.

Users see these, never a raw ``libvirtError``: each carries a message that says what
went wrong and a ``hint`` that says what to do about it.
"""

from __future__ import annotations


class HypervisorError(Exception):
    """Something at the hypervisor boundary failed."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidSpec(HypervisorError, ValueError):
    """A domain spec is malformed; caught before any host is asked."""


class UnsupportedCapability(HypervisorError):
    """The host cannot do what the spec asks (checked before anything is created)."""


class InsufficientResources(HypervisorError):
    """The host lacks the memory or CPUs the domain asks for."""


class DomainExists(HypervisorError):
    """A domain with this name is already defined on the host."""


class NotFound(HypervisorError):
    """No domain with this name exists on the host."""


class NotManaged(HypervisorError):
    """The domain exists but carries no sdmesh metadata: sdmesh never touches it."""


class HypervisorUnavailable(HypervisorError):
    """The hypervisor connection cannot be opened or was lost."""
