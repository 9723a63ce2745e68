"""Real tiny guests under qemu:///system, driven with virsh: the e2e tests' foundation.

- `skip_reason()` says why this host cannot run them (not root, no QEMU); None when it can.
- `ensure_host()` runs scripts/start-libvirtd and scripts/build-guest --publish (both idempotent
  and quick when done) and returns the published guest image.
- `GuestRun` owns a set of test domains and their files (qcow2 overlays, console logs) under
  one name prefix; `cleanup()` destroys and undefines them and removes the files, and
  `leftovers()` tells what is still there.

The guest (scripts/guest-init.sh) prints "SDMESH-GUEST ..." lines to its serial console, which
libvirt logs to a file; `wait_for_marker` and `console_identity` read them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[2]
URI = "qemu:///system"
QEMU = Path("/usr/bin/qemu-system-x86_64")
IMAGES = Path(os.environ.get("SDMESH_IMAGES", "/var/lib/libvirt/images/sdmesh"))
# TCG by default: it works everywhere; SDMESH_VIRT_TYPE=kvm where /dev/kvm really works.
VIRT_TYPE = os.environ.get("SDMESH_VIRT_TYPE", "qemu")
PREFIX = "sdmesh-test-"
MARKER = "SDMESH-GUEST"
READY = f"{MARKER} ready"
BOOT_TIMEOUT = float(os.environ.get("SDMESH_BOOT_TIMEOUT", "180"))


class HostNotReady(RuntimeError):
    """libvirtd or the guest image could not be set up; the message says why."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path  # the Debian bzImage
    kernel_pvh: Path | None  # the same kernel uncompressed, entered via PVH: boots 2x faster
    initrd: Path
    base: Path
    kernel_version: str

    @property
    def allowed_dirs(self) -> list[str]:
        """The directories holding its files: what a host must list in allowed-image-dirs
        (not a default: /var/lib/libvirt/images also holds other guests' live disks)."""
        files = (self.boot_kernel, self.initrd, self.base)
        return sorted({str(path.parent) for path in files})

    @property
    def boot_kernel(self) -> Path:
        """The kernel domains boot; SDMESH_GUEST_PVH=0 forces the bzImage."""
        if self.kernel_pvh and os.environ.get("SDMESH_GUEST_PVH", "1") != "0":
            return self.kernel_pvh
        return self.kernel


@dataclass(frozen=True)
class GuestSpec:
    """One guest: identity on the kernel command line, a qcow2 overlay on the base image."""

    hostname: str
    ip: str
    netmask: str = "255.255.255.0"
    gateway: str = ""
    memory_mib: int = 128
    nic: bool = True  # a user-mode (slirp) virtio NIC: real eth0, no host network setup
    disk: bool = True
    extra_cmdline: str = ""

    def cmdline(self) -> str:
        # The kernel's ip= syntax plus hostname=; scripts/guest-init.sh applies both.
        ip = f"ip={self.ip}::{self.gateway}:{self.netmask}:{self.hostname}:eth0:off"
        parts = ["console=ttyS0", "quiet", "loglevel=3", ip, f"hostname={self.hostname}"]
        if self.extra_cmdline:
            parts.append(self.extra_cmdline)
        return " ".join(parts)


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (starts libvirtd, boots guests under qemu:///system)"
    if shutil.which("apt-get") is None and not QEMU.exists():
        return f"{QEMU} is missing and apt-get is not available to install it"
    return None


def _run(cmd: Sequence[str], timeout: float = 600) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostNotReady(f"{' '.join(cmd)}: {e}") from e
    if res.returncode != 0:
        raise HostNotReady(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr.strip()}")
    return res.stderr


def ensure_host() -> GuestImage:
    """libvirtd answering on qemu:///system and the guest built and published; idempotent."""
    reason = skip_reason()
    if reason:
        raise HostNotReady(reason)
    _run([str(REPO / "scripts/start-libvirtd")])
    _run([str(REPO / "scripts/build-guest"), "--publish", str(IMAGES / "guest")])
    env: dict[str, str] = {}
    for line in (IMAGES / "guest/guest.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    image = GuestImage(
        kernel=Path(env["SDMESH_GUEST_KERNEL"]),
        kernel_pvh=Path(env["SDMESH_GUEST_KERNEL_PVH"])
        if env.get("SDMESH_GUEST_KERNEL_PVH")
        else None,
        initrd=Path(env["SDMESH_GUEST_INITRD"]),
        base=Path(env["SDMESH_GUEST_BASE"]),
        kernel_version=env["SDMESH_GUEST_KVER"],
    )
    for p in (image.boot_kernel, image.initrd, image.base):
        if not p.is_file():
            raise HostNotReady(f"guest file missing after build: {p}")
    return image


def virsh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=timeout
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def domain_xml(
    name: str, spec: GuestSpec, image: GuestImage, overlay: Path | None, log: Path
) -> str:
    """A direct-kernel-boot domain: no firmware disk boot, serial console logged to a file."""
    disk = (
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(overlay))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
        if overlay
        else ""
    )
    # rom off: skips loading iPXE's option ROM, which direct kernel boot never uses.
    nic = (
        """
    <interface type='user'>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>"""
        if spec.nic
        else ""
    )
    return f"""<domain type='{VIRT_TYPE}'>
  <name>{escape(name)}</name>
  <metadata>
    <sdmesh:test xmlns:sdmesh='urn:sdmesh:test' hostname='{escape(spec.hostname)}'/>
  </metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.boot_kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(spec.cmdline())}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>{disk}{nic}
    <serial type='file'>
      <source path='{escape(str(log))}'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def wait_for_marker(log: Path, marker: str = READY, timeout: float = BOOT_TIMEOUT) -> float:
    """Seconds until `marker` shows in the console log; TimeoutError with the log's tail."""
    start = time.monotonic()
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if marker in text:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(
                f"no {marker!r} in {log} after {timeout:.0f}s; tail:\n{text[-2000:]}"
            )
        time.sleep(0.05)


def console_lines(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"{MARKER} ([^\r\n]*)", text)]


def console_identity(text: str) -> dict[str, str]:
    """The fields of the guest's 'SDMESH-GUEST hostname=... ip=...' line."""
    for line in console_lines(text):
        if line.startswith("hostname="):
            return dict(kv.split("=", 1) for kv in line.split())
    raise ValueError(f"no identity line in console output:\n{text[-2000:]}")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_test_domains() -> list[str]:
    """Every domain (running or defined) whose name has the test prefix."""
    out = virsh("list", "--all", "--name").stdout
    return [n for n in out.split() if n.startswith(PREFIX)]


class GuestRun:
    """Test domains named sdmesh-test-<pid>-<tag>-<n> and their files in one directory."""

    def __init__(self, image: GuestImage, tag: str | None = None) -> None:
        self.image = image
        self.prefix = f"{PREFIX}{os.getpid()}-{tag or secrets.token_hex(3)}-"
        self.dir = IMAGES / "runs" / self.prefix.rstrip("-")
        self.names: list[str] = []

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return (
            self.dir / f"{name}.qcow2",
            self.dir / f"{name}.console.log",
            self.dir / f"{name}.xml",
        )

    def prepare(self, spec: GuestSpec) -> tuple[str, Path]:
        """Overlay and XML for one more guest; returns (domain name, xml path)."""
        # Group-and-world traversable: QEMU runs as libvirt-qemu.
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.dir.parent.chmod(0o755)
        name = f"{self.prefix}{len(self.names) + 1}"
        overlay, log, xml = self._paths(name)
        if spec.disk:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.image.base),
                 str(overlay)],
                check=True,
            )  # fmt: skip
        log.unlink(missing_ok=True)
        xml.write_text(domain_xml(name, spec, self.image, overlay if spec.disk else None, log))
        self.names.append(name)
        return name, xml

    def console(self, name: str) -> Path:
        return self._paths(name)[1]

    def define_and_start(self, spec: GuestSpec) -> str:
        name, xml = self.prepare(spec)
        virsh("define", str(xml))
        virsh("start", name)
        return name

    def create(self, spec: GuestSpec) -> str:
        """A transient domain (virsh create): gone from libvirt once destroyed."""
        name, xml = self.prepare(spec)
        virsh("create", str(xml))
        return name

    def cleanup(self) -> None:
        for name in list_test_domains():
            if name.startswith(self.prefix):
                remove_domain(name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Domains with this run's prefix and files in its directory; [] when clean."""
        left = [n for n in list_test_domains() if n.startswith(self.prefix)]
        if self.dir.exists():
            left += [str(p) for p in self.dir.iterdir()] or [str(self.dir)]
        return left


def remove_domain(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--nvram", check=False)


def reap_stale() -> list[str]:
    """Remove test domains and run dirs left by test processes that died (killed CI, ^C)."""
    reaped = []
    for name in list_test_domains():
        m = re.match(rf"{PREFIX}(\d+)-", name)
        if m and not process_alive(int(m.group(1))):
            remove_domain(name)
            reaped.append(name)
    runs = IMAGES / "runs"
    if runs.is_dir():
        for d in runs.iterdir():
            m = re.match(rf"{PREFIX}(\d+)-", d.name + "-")
            if m and not process_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)
                reaped.append(str(d))
    return reaped


@contextmanager
def guest_run(image: GuestImage, tag: str | None = None) -> Iterator[GuestRun]:
    run = GuestRun(image, tag)
    try:
        yield run
    finally:
        run.cleanup()
