"""Domain XML, built with ElementTree (every value escaped, never string formatting).

Every domain carries ``<metadata><sdmesh:domain xmlns:sdmesh="...">`` with pool, component
path, generation and descriptor hash, so an agent can rebuild its state from libvirt alone.
The same builder serves KVM/QEMU (TCG when unaccelerated), Xen (PV with a kernel, HVM from
a disk) and libvirt's test driver; :class:`RenderTarget` says which.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from sdmesh.hypervisor.capabilities import RenderTarget
from sdmesh.hypervisor.spec import (
    DiskSpec,
    DomainSpec,
    KernelBoot,
    NicSpec,
    SdmeshMetadata,
    effective_cmdline,
)

SDMESH_NS = "https://sdmesh.dev/xmlns/domain/1"
SDMESH_PREFIX = "sdmesh"
# Serialise our element as sdmesh:domain rather than ns0:domain (a process-wide registry).
ET.register_namespace(SDMESH_PREFIX, SDMESH_NS)

_METADATA_TAG = f"{{{SDMESH_NS}}}domain"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class MalformedMetadata(ValueError):
    """Our namespace is there but its content cannot be read (never act on such a domain)."""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


# --------------------------------------------------------------------------- metadata


def metadata_element(metadata: SdmeshMetadata) -> ET.Element:
    root = ET.Element(_METADATA_TAG)
    _sub(root, "pool", metadata.pool)
    _sub(root, "path", metadata.path)
    _sub(root, "generation", str(metadata.generation))
    _sub(root, "descriptor-hash", metadata.descriptor_hash)
    if metadata.node is not None:
        _sub(root, "node", metadata.node)
    if metadata.created_at is not None:
        _sub(root, "created-at", repr(metadata.created_at))
    return root


def metadata_xml(metadata: SdmeshMetadata) -> str:
    """Our metadata alone, as ``virDomainSetMetadata`` wants it."""
    return ET.tostring(metadata_element(metadata), encoding="unicode")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata(text: str) -> SdmeshMetadata:
    """Read our element, as returned by ``dom.metadata(ELEMENT, SDMESH_NS)`` or in full XML.

    libvirt hands the element back without its namespace prefix; both forms are accepted.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MalformedMetadata(f"sdmesh metadata is not XML: {exc}") from exc
    return _metadata_from_element(root)


def _metadata_from_element(root: ET.Element) -> SdmeshMetadata:
    fields = {_local(child.tag): (child.text or "") for child in root}
    try:
        created = fields.get("created-at")
        return SdmeshMetadata(
            pool=fields["pool"],
            path=fields["path"],
            generation=int(fields["generation"]),
            descriptor_hash=fields["descriptor-hash"],
            node=fields.get("node") or None,
            created_at=float(created) if created else None,
        )
    except (KeyError, ValueError) as exc:
        raise MalformedMetadata(f"sdmesh metadata lacks or garbles {exc}") from exc


def metadata_from_domain_xml(domain_xml: str) -> SdmeshMetadata | None:
    """Our metadata from a full ``XMLDesc()``, or None for a domain sdmesh did not create."""
    element = ET.fromstring(domain_xml).find(f"metadata/{_METADATA_TAG}")
    return None if element is None else _metadata_from_element(element)


# --------------------------------------------------------------------------- domain


def _disk(devices: ET.Element, disk: DiskSpec, target: RenderTarget) -> None:
    element = _sub(devices, "disk", type=disk.kind, device=disk.device)
    # "qemu" is also Xen's qdisk backend, the one that reads qcow2; "phy" is blkback.
    driver = "phy" if target.domain_type == "xen" and disk.kind == "block" else "qemu"
    _sub(element, "driver", name=driver, type=disk.format)
    if disk.kind == "block":
        _sub(element, "source", dev=disk.path)
    else:
        _sub(element, "source", file=disk.path)
    _sub(element, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly:
        _sub(element, "readonly")


def _interface(devices: ET.Element, nic: NicSpec, target: RenderTarget) -> None:
    element = _sub(devices, "interface", type=nic.mode)
    _sub(element, "mac", address=nic.mac)
    if nic.mode == "network" and nic.source is not None:
        _sub(element, "source", network=nic.source)
    elif nic.mode == "bridge" and nic.source is not None:
        _sub(element, "source", bridge=nic.source)
    if nic.model is not None and not target.paravirt:
        _sub(element, "model", type=nic.model)


def _console(devices: ET.Element, spec: DomainSpec, target: RenderTarget) -> None:
    """A pty console (``virsh console`` works) whose output is also logged to a file."""
    if target.paravirt:
        console = _sub(devices, "console", type="pty")
        if spec.console_log is not None:
            _sub(console, "log", file=spec.console_log, append="on")
        _sub(console, "target", type="xen", port="0")
        return
    serial = _sub(devices, "serial", type="pty")
    if spec.console_log is not None:
        _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def build_domain_element(
    spec: DomainSpec, metadata: SdmeshMetadata, target: RenderTarget, *, validate: bool = True
) -> ET.Element:
    """The ``<domain>`` element; ``validate=False`` only when the caller just validated."""
    if validate:
        spec.validate()
        metadata.validate()
    domain = ET.Element("domain", type=target.domain_type)
    _sub(domain, "name", spec.name)
    title = _CONTROL.sub(" ", f"sdmesh {metadata.pool} {metadata.path}")[:200]
    _sub(domain, "title", title)
    _sub(domain, "metadata").append(metadata_element(metadata))
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))

    os_element = _sub(domain, "os")
    _sub(os_element, "type", target.os_type)
    if isinstance(spec.boot, KernelBoot):
        _sub(os_element, "kernel", spec.boot.kernel)
        if spec.boot.initrd is not None:
            _sub(os_element, "initrd", spec.boot.initrd)
        cmdline = effective_cmdline(spec.boot, spec.identity)
        if cmdline:
            _sub(os_element, "cmdline", cmdline)
    elif not target.paravirt:
        _sub(os_element, "boot", dev="hd")

    if target.os_type == "hvm" and target.domain_type != "test":
        features = _sub(domain, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
        if target.domain_type == "xen":
            _sub(features, "pae")
    if target.domain_type == "kvm":
        _sub(domain, "cpu", mode="host-passthrough")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    for disk in spec.disks:
        _disk(devices, disk, target)
    for nic in spec.nics:
        _interface(devices, nic, target)
    _console(devices, spec, target)
    if target.domain_type in ("kvm", "qemu"):
        rng = _sub(devices, "rng", model="virtio")  # guests get entropy at boot, boot faster
        _sub(rng, "backend", "/dev/urandom", model="random")
    return domain


def build_domain_xml(
    spec: DomainSpec, metadata: SdmeshMetadata, target: RenderTarget, *, validate: bool = True
) -> str:
    """The XML to hand to ``defineXML``."""
    element = build_domain_element(spec, metadata, target, validate=validate)
    return ET.tostring(element, encoding="unicode")
