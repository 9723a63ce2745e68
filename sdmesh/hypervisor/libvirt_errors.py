"""Turning ``libvirtError`` into sdmesh errors that say what to do."""

from __future__ import annotations

import libvirt

from sdmesh.hypervisor.errors import (
    DomainExists,
    HypervisorError,
    HypervisorUnavailable,
    InvalidSpec,
    NotFound,
    UnsupportedCapability,
)

# VIR_ERR_SYSTEM_ERROR is any OS error (a file's permissions too); it means the connection
# only when it comes from the RPC or remote layers (checked through _UNAVAILABLE_DOMAINS).
_UNAVAILABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}
_UNAVAILABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_UNSUPPORTED_CODES = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_XML_CODES = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL}


def is_code(err: libvirt.libvirtError, *codes: int) -> bool:
    return err.get_error_code() in codes


def translate(
    err: libvirt.libvirtError, *, action: str, uri: str, name: str | None = None
) -> HypervisorError:
    """The sdmesh error for a libvirt failure during ``action``."""
    code = err.get_error_code()
    origin = err.get_error_domain()
    words = err.get_error_message() or str(err)
    subject = f" {name!r}" if name else ""
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(f"{action}: no domain{subject} on {uri}")
    if "already exists" in words:
        return DomainExists(
            f"{action}: a domain{subject} already exists on {uri}",
            hint="destroy it first, or adopt it through list_managed()",
        )
    if code in _UNSUPPORTED_CODES:
        return UnsupportedCapability(
            f"{action}: {uri} does not support this: {words}",
            hint="check the host's capabilities (`virsh capabilities`) or choose another host",
        )
    if code in _XML_CODES:
        return InvalidSpec(
            f"{action}: libvirt refused the domain definition: {words}",
            hint="the descriptor produced a definition this hypervisor rejects",
        )
    if "Permission denied" in words:
        return HypervisorError(
            f"{action} failed on {uri}: {words}",
            hint="the hypervisor's user (libvirt-qemu for qemu:///system) must be able to read "
            "the disks, kernel and initrd, and to enter every directory above them",
        )
    if code in _UNAVAILABLE_CODES or origin in _UNAVAILABLE_DOMAINS:
        return HypervisorUnavailable(
            f"{action}: cannot talk to the hypervisor at {uri}: {words}",
            hint="is libvirtd running (systemctl status libvirtd), and may this user "
            f"connect to {uri}?",
        )
    return HypervisorError(f"{action} failed on {uri}: {words}")
