"""Typed description of one domain, independent of libvirt and of the descriptor language.

The lifecycle layer turns a resolved VirtualMachine component into a :class:`DomainSpec`
plus an :class:`SdmeshMetadata`; everything below works on these plain values.
``validate()`` methods are the cheap syntax checks that need no host (the host-side checks
live in :mod:`sdmesh.hypervisor.capabilities`), so a bad descriptor fails before anything
is created anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from sdmesh.hypervisor.errors import InvalidSpec

if TYPE_CHECKING:
    from sdmesh.storage.model import Volume

Flavour = Literal["kvm", "qemu", "xen", "test"]
FLAVOURS: tuple[Flavour, ...] = ("kvm", "qemu", "xen", "test")
DiskFormat = Literal["qcow2", "raw"]
DiskBus = Literal["virtio", "sata", "scsi", "ide", "xen", "usb"]
DiskDevice = Literal["disk", "cdrom"]
DiskKind = Literal["file", "block"]
NicMode = Literal["network", "bridge", "user"]

_NAME_FORBIDDEN = re.compile(r"[/\x00-\x1f\x7f]")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TARGET_DEV = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_DESCRIPTOR_HASH = re.compile(r"^[a-z0-9]+:[0-9a-f]{16,128}$")


def _fail(message: str, hint: str | None = None) -> InvalidSpec:
    return InvalidSpec(message, hint=hint)


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _require_printable(what: str, text: str) -> None:
    """XML 1.0 cannot carry most control characters, even escaped; refuse them early."""
    if _CONTROL_CHARS.search(text):
        raise _fail(f"{what} contains control characters: {text!r}")


def _require_absolute(what: str, path: str) -> None:
    if not PurePosixPath(path).is_absolute():
        raise _fail(f"{what} must be an absolute path, got {path!r}")
    _require_printable(what, path)


# --------------------------------------------------------------------------- boot


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot (Xen PV, or QEMU ``-kernel``): identity reaches the guest via ``ip=``."""

    kernel: str
    initrd: str | None = None
    cmdline: str = ""

    def validate(self) -> None:
        _require_absolute("kernel", self.kernel)
        if self.initrd is not None:
            _require_absolute("initrd", self.initrd)
        _require_printable("kernel cmdline", self.cmdline)


@dataclass(frozen=True)
class DiskBoot:
    """Boot from the first disk (a cloud image): identity reaches the guest via NoCloud."""


Boot = KernelBoot | DiskBoot


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DiskSpec:
    """One block device of the guest."""

    path: str
    format: DiskFormat = "qcow2"
    target: str = "vda"
    bus: DiskBus = "virtio"
    readonly: bool = False
    device: DiskDevice = "disk"
    kind: DiskKind = "file"
    has_backing_file: bool = False

    @classmethod
    def from_volume(
        cls, volume: Volume, *, target: str = "vda", bus: DiskBus = "virtio"
    ) -> DiskSpec:
        """The disk that attaches a volume prepared by a storage backend."""
        return cls(
            path=str(volume.path),
            format=volume.format,
            target=target,
            bus=bus,
            kind=volume.kind,
            has_backing_file=volume.has_backing_file,
        )

    @classmethod
    def seed_cdrom(cls, path: str, *, target: str = "sdz", bus: DiskBus = "sata") -> DiskSpec:
        """The read-only CD-ROM carrying a cloud-init NoCloud seed."""
        return cls(path=path, format="raw", target=target, bus=bus, readonly=True, device="cdrom")

    def validate(self) -> None:
        _require_absolute("disk path", self.path)
        if not _TARGET_DEV.fullmatch(self.target):
            raise _fail(f"disk target {self.target!r} is not a device name like vda, sda or xvda")
        if self.device == "cdrom" and not self.readonly:
            raise _fail(f"cdrom {self.target} must be readonly")
        if self.has_backing_file and self.format != "qcow2":
            raise _fail(f"disk {self.target}: only qcow2 images have backing files")


@dataclass(frozen=True)
class NicSpec:
    """One network interface: on a libvirt network, on a host bridge, or user-mode (SLIRP)."""

    mac: str
    mode: NicMode = "network"
    source: str | None = "default"
    model: str | None = "virtio"

    @classmethod
    def on_network(
        cls, mac: str, network: str = "default", model: str | None = "virtio"
    ) -> NicSpec:
        return cls(mac=mac, mode="network", source=network, model=model)

    @classmethod
    def on_bridge(cls, mac: str, bridge: str, model: str | None = "virtio") -> NicSpec:
        return cls(mac=mac, mode="bridge", source=bridge, model=model)

    @classmethod
    def user_mode(cls, mac: str, model: str | None = "virtio") -> NicSpec:
        return cls(mac=mac, mode="user", source=None, model=model)

    def validate(self) -> None:
        if not _MAC.fullmatch(self.mac):
            raise _fail(f"MAC {self.mac!r} is not six lower-case hex octets separated by ':'")
        if int(self.mac[:2], 16) & 1:
            raise _fail(f"MAC {self.mac} is a multicast address; a NIC needs a unicast one")
        if self.mode == "user":
            if self.source is not None:
                raise _fail("a user-mode NIC takes no source network or bridge")
        elif self.source is None or not _SOURCE_NAME.fullmatch(self.source):
            raise _fail(f"a {self.mode} NIC needs a {self.mode} name, got {self.source!r}")
        if self.model is not None and not re.match(r"^[A-Za-z0-9_-]{1,32}$", self.model):
            raise _fail(f"NIC model {self.model!r} is not a device model name")


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class GuestIdentity:
    """What the guest must know about itself before it boots (from the descriptor)."""

    hostname: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()
    device: str | None = None

    def validate(self) -> None:
        if self.hostname is not None:
            labels = self.hostname.split(".")
            if len(self.hostname) > 253 or not all(
                _HOST_LABEL.fullmatch(label) for label in labels
            ):
                raise _fail(
                    f"hostname {self.hostname!r} is not a valid host name",
                    hint="use letters, digits and '-' in dot-separated labels of 1-63 characters",
                )
        if self.device is not None and not _IFACE.fullmatch(self.device):
            raise _fail(f"interface name {self.device!r} is not valid")
        if self.ip is None:
            if self.netmask is not None or self.gateway is not None:
                raise _fail("netmask and gateway need an ip")
        else:
            network = self.interface().network
            if self.gateway is not None:
                gateway = _ipv4(self.gateway, "gateway")
                if gateway not in network:
                    raise _fail(f"gateway {gateway} is outside the guest's network {network}")
        for server in self.nameservers:
            _ip_any(server, "nameserver")

    def interface(self) -> ipaddress.IPv4Interface:
        """Address and network; a missing netmask means a /24, as the tutorial's pools used."""
        if self.ip is None:
            raise _fail("this identity has no ip")
        mask = self.netmask if self.netmask is not None else "24"
        return _interface(self.ip, mask)

    def address(self) -> ipaddress.IPv4Address:
        return self.interface().ip

    def network(self) -> ipaddress.IPv4Network:
        return self.interface().network

    @property
    def prefixlen(self) -> int:
        return self.network().prefixlen


@functools.lru_cache(maxsize=8192)
def _interface(ip: str, mask: str) -> ipaddress.IPv4Interface:
    address = _ipv4(ip, "ip")
    try:
        return ipaddress.IPv4Interface(f"{address}/{mask}")
    except ValueError as exc:
        raise _fail(f"netmask {mask!r} is neither dotted (255.255.255.0) nor a prefix") from exc


@functools.lru_cache(maxsize=8192)
def _ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    """Parsing is pure and specs are checked several times on their way to libvirt."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise _fail(f"{what} {text!r} is not an IPv4 address") from exc


def _ip_any(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise _fail(f"{what} {text!r} is not an IP address") from exc


def kernel_ip_argument(identity: GuestIdentity) -> str | None:
    """The kernel's ``ip=`` parameter (Documentation/admin-guide/nfs/nfsroot.rst) or None.

    Format ``ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>``.
    The identity is validated first: that keeps ':' and spaces out of the hostname, so it
    cannot smuggle parameters into the command line.
    """
    if identity.ip is None:
        return None
    identity.validate()
    interface = identity.interface()
    fields = [
        str(interface.ip),
        "",
        identity.gateway or "",
        str(interface.netmask),
        identity.hostname or "",
        identity.device or "",
        "off",
    ]
    fields.extend(identity.nameservers[:2])  # dns0, dns1
    return "ip=" + ":".join(fields)


def effective_cmdline(boot: KernelBoot, identity: GuestIdentity | None) -> str:
    """The descriptor's command line plus ``ip=`` unless the descriptor already set one."""
    parts = boot.cmdline.split()
    if identity is not None and not any(part.startswith("ip=") for part in parts):
        ip_arg = kernel_ip_argument(identity)
        if ip_arg is not None:
            parts.append(ip_arg)
    return " ".join(parts)


# --------------------------------------------------------------------------- MACs and names

#: Prefix of the MACs sdmesh derives. 0x52 has the locally-administered bit set and the
#: multicast bit clear, and ``52:54`` is QEMU's conventional prefix that tools recognise;
#: the third octet is never 00, so a derived MAC cannot collide with the random
#: ``52:54:00:xx:xx:xx`` MACs libvirt invents itself. The remaining 32 hashed bits make a
#: collision inside a 1,000-VM pool about 1 in 10,000, against 3 in 100 with 24 bits.
MAC_PREFIX = "52:54"


def derive_mac(pool: str, component_path: str, nic_index: int = 0) -> str:
    """Deterministic MAC for NIC ``nic_index`` of a component: same inputs, same MAC, any host."""
    digest = hashlib.sha256(f"{pool}\0{component_path}\0{nic_index}".encode()).digest()
    octets = bytearray(digest[:4])
    if octets[0] == 0:
        octets[0] = 1 + digest[4] % 255
    return MAC_PREFIX + ":" + ":".join(f"{octet:02x}" for octet in octets)


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def disk_bus_for(flavour: Flavour) -> DiskBus:
    """The paravirtual disk bus of a flavour: Xen's blkfront, virtio elsewhere."""
    return "xen" if flavour == "xen" else "virtio"


def disk_target_for(flavour: Flavour, index: int) -> str:
    """Device name of the ``index``-th disk (0 → vda / xvda, 26 → vdaa)."""
    prefix = "xvd" if flavour == "xen" else "vd"
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return prefix + letters


def domain_name_for(pool: str, component_path: str, *, prefix: str = "sdm") -> str:
    """A readable, unique, libvirt-safe domain name for a component of a pool."""
    digest = hashlib.sha256(f"{pool}\0{component_path}".encode()).hexdigest()[:8]
    pool_slug = _SLUG.sub("-", pool).strip("-.")[:24] or "pool"
    path_slug = _SLUG.sub("-", component_path).strip("-.")[:40] or "root"
    return f"{prefix}-{pool_slug}-{path_slug}-{digest}"


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class SdmeshMetadata:
    """What every sdmesh domain carries so state can be rebuilt from the hypervisor alone."""

    pool: str
    path: str
    generation: int
    descriptor_hash: str
    node: str | None = None
    created_at: float | None = None

    def validate(self) -> None:
        if not self.pool or not self.path:
            raise _fail("metadata needs a pool id and a component path")
        for what, text in (("pool id", self.pool), ("component path", self.path)):
            _require_printable(what, text)
        if self.node is not None:
            _require_printable("node id", self.node)
        if self.generation < 0:
            raise _fail(f"generation must be >= 0, got {self.generation}")
        if not _DESCRIPTOR_HASH.fullmatch(self.descriptor_hash):
            raise _fail(
                f"descriptor hash {self.descriptor_hash!r} is not 'algorithm:hex'",
                hint="e.g. 'sha256:' followed by the hex digest of the resolved descriptor",
            )


# --------------------------------------------------------------------------- domain


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define one guest on any supported hypervisor."""

    name: str
    memory_mib: int
    vcpus: int
    boot: Boot
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    console_log: str | None = None
    flavour: Flavour = "kvm"
    identity: GuestIdentity | None = None

    def validate(self) -> None:
        """Cheap checks that need no host; raises :class:`InvalidSpec`."""
        if not self.name or len(self.name) > 200 or _NAME_FORBIDDEN.search(self.name):
            raise _fail(
                f"domain name {self.name!r} is empty, too long, or contains '/' or control "
                "characters",
                hint="derive names with sdmesh.hypervisor.spec.domain_name_for(pool, path)",
            )
        if self.flavour not in FLAVOURS:
            raise _fail(f"unknown flavour {self.flavour!r}; expected one of {', '.join(FLAVOURS)}")
        if self.memory_mib < 1:
            raise _fail(f"memory must be at least 1 MiB, got {self.memory_mib}")
        if self.vcpus < 1:
            raise _fail(f"vcpus must be at least 1, got {self.vcpus}")
        if isinstance(self.boot, KernelBoot):
            self.boot.validate()
        elif not any(disk.device == "disk" for disk in self.disks):
            raise _fail(f"domain {self.name} boots from disk but has no disk")
        targets = [disk.target for disk in self.disks]
        if len(set(targets)) != len(targets):
            raise _fail(f"domain {self.name} uses a disk target twice: {targets}")
        for disk in self.disks:
            disk.validate()
        macs = [nic.mac for nic in self.nics]
        if len(set(macs)) != len(macs):
            raise _fail(f"domain {self.name} uses a MAC twice: {macs}")
        for nic in self.nics:
            nic.validate()
        if self.console_log is not None:
            _require_absolute("console log", self.console_log)
        if self.identity is not None:
            self.identity.validate()

    def with_disk(self, disk: DiskSpec) -> DomainSpec:
        return replace(self, disks=(*self.disks, disk))
