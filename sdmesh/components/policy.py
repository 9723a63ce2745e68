"""What a descriptor may make this host do: run a shell, open host files, join bridges.

sdmesh runs as root, so a descriptor naming ``baseImage "/etc/shadow"`` or a console log in
``/root/.ssh`` is a way in unless the host says no. Each host keeps its own allow-lists
(``allow-shell``, ``allowed-image-dirs``, ``allowed-networks``, ``allowed-bridges``,
``allowed-volume-groups`` in its configuration) and checks every name at the moment of use,
after resolving symlinks and ``..``, with a prefix test on path components (never on
strings: ``/var/lib/sdmesh/images-evil`` is not under ``/var/lib/sdmesh/images``). The idea is
libvirt's storage pools, Incus ``restricted.devices.disk.paths`` and Nomad's host volumes and
``raw_exec`` switch: the host names what it lends, the descriptor picks among it.

A refusal is a :class:`PolicyRefused` whose message names the rule and the setting to change.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from sdmesh.language.values import ComponentDescription
from sdmesh.safeio import UnsafeDirectory, check_parents
from sdmesh.storage.images import BASE_HEADER_BYTES, base_header_problem

#: Where host policy is configured, for the messages (the agent passes its own file).
DEFAULT_CONFIG_FILE = "/etc/sdmesh/sdmesh.toml"
#: sdmesh's own images directory. Not libvirt's default storage pool,
#: /var/lib/libvirt/images: other guests' live disks live there, and a descriptor naming one
#: as its base would read (and, as raw, copy) another guest's disk; a host that keeps its
#: bases there lists that directory (or a subdirectory) in allowed-image-dirs.
DEFAULT_IMAGE_DIRS = (Path("/var/lib/sdmesh/images"),)
#: libvirt's NAT network: guests reach out, nothing on the host's LAN reaches in.
DEFAULT_NETWORKS = ("default",)
#: Components that run commands on the host (SmartFrog's shellscript package).
SHELL_CLASSES = frozenset(
    {
        "org.smartfrog.services.shellscript.SFScriptExecutionImpl",
        "org.smartfrog.services.shellscript.SFScriptImpl",
    }
)
SHELL = "org.smartfrog.services.shellscript.SFScriptExecutionImpl"
#: What a Shell starts when it runs nothing but an idle interpreter (the library's Exec and
#: BashExec): sdmesh never writes to it, so on a host without allow-shell it is not started.
IDLE_INTERPRETERS = (("/bin/sh",), ("/bin/bash",))
#: A console log named by the descriptor is a file name in the console directory.
_LOG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def shell_command(description: ComponentDescription) -> tuple[str, ...]:
    """The command a Shell component starts: its ``exec``'s ``cmd``, /bin/sh by default."""
    found = description.get("exec")
    if isinstance(found, ComponentDescription):
        cmd = found.get("cmd")
        if isinstance(cmd, list) and cmd and all(isinstance(part, str) for part in cmd):
            return tuple(str(part) for part in cmd)
    return ("/bin/sh",)


def needs_shell(description: ComponentDescription) -> bool:
    """Whether this leaf runs commands on its host: every Script, and a Shell unless it
    only starts an idle interpreter (the tutorial's ``myShell extends BashShell``)."""
    sf_class = description.get("sfClass")
    if sf_class == SHELL:
        return shell_command(description) not in IDLE_INTERPRETERS
    return sf_class in SHELL_CLASSES


class PolicyRefused(Exception):
    """This host does not allow what the descriptor asks; the message says which setting."""


def refuse_nul(what: str, path: str) -> None:
    """No path holds a NUL byte (the system calls would take it as the end of the name, and
    Python raises ValueError): refuse it, located, before anything looks it up."""
    if "\0" in path:
        raise PolicyRefused(f"{what} {path.split(chr(0))[0]!r}... contains a NUL byte")


def resolved(path: str | Path) -> Path:
    """``path`` with every symlink and ``..`` resolved, as far as it exists."""
    return Path(os.path.realpath(path))


def is_within(path: Path, directory: Path) -> bool:
    """Component-wise containment of two already resolved paths."""
    return path == directory or path.is_relative_to(directory)


@dataclass(frozen=True)
class HostPolicy:
    """One host's answer to "may a descriptor make me do this?". Deny by default."""

    allow_shell: bool = False
    image_dirs: tuple[Path, ...] = DEFAULT_IMAGE_DIRS
    networks: tuple[str, ...] = DEFAULT_NETWORKS
    bridges: tuple[str, ...] = ()
    volume_groups: tuple[str, ...] = ()
    config_file: str = DEFAULT_CONFIG_FILE  # "": none (sdmesh run), say so instead
    #: False only for a run with no privilege to lend (``sdmesh run`` as an ordinary user:
    #: libvirt opens files with that user's rights), where the four allow-lists are moot.
    confined: bool = True

    def _hint(self, setting: str) -> str:
        if not self.config_file:  # sdmesh run as root: the defaults, nothing to set
            return (
                "(sdmesh run as root keeps to the host defaults; run it as your own user, or "
                f"on an agent whose configuration sets {setting.split(' ')[0]})"
            )
        return f"(set {setting} in {self.config_file})"

    # ------------------------------------------------------------------------- shell
    def check_shell(self, component: str) -> None:
        """Shell components run commands as the agent (root): only on hosts that opt in."""
        if not self.allow_shell:
            raise PolicyRefused(
                f"{component} is a shell component and this host does not allow shell "
                f"components {self._hint('allow-shell = true')}"
            )

    # ------------------------------------------------------------------------ files
    def host_file(self, what: str, path: str) -> Path:
        """The real path of a host file a descriptor names (baseImage, kernel, initrd),
        refused unless it lies under one of ``image_dirs``. Use the returned path, not the
        descriptor's, so a later swap of a link on the way changes nothing."""
        refuse_nul(what, path)
        if not Path(path).is_absolute():
            raise PolicyRefused(f"{what} {path} must be an absolute path")
        real = resolved(path)
        if not self.confined:
            return real
        allowed = [resolved(directory) for directory in self.image_dirs]
        if not any(is_within(real, directory) for directory in allowed):
            via = "" if str(real) == path else f" (it resolves to {real})"
            shown = ", ".join(str(directory) for directory in self.image_dirs) or "none"
            raise PolicyRefused(
                f"{what} {path}{via} is outside allowed-image-dirs [{shown}] "
                f"{self._hint('allowed-image-dirs')}"
            )
        return real

    def base_image(self, path: str, declared_format: str | None = None) -> Path:
        """:meth:`host_file` for a ``baseImage``, and the file itself checked: a regular file
        owned by root (or the agent) that nobody else may write, under parents nobody else
        may change (else its owner swaps in another after the check), standing alone (a
        qcow2 backing file or external data file would make QEMU open a path no allow-list
        saw) and of the declared ``baseFormat``. Read here, from its header, with no tool
        that could be fooled by format probing."""
        real = self.host_file("baseImage", path)
        if not self.confined:
            return real
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return real  # the backend says it is missing, with its hint
        except OSError as error:
            raise PolicyRefused(f"baseImage {path} cannot be opened: {error.strerror}") from None
        try:
            info = os.fstat(fd)
            header = os.pread(fd, BASE_HEADER_BYTES, 0) if stat.S_ISREG(info.st_mode) else b""
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PolicyRefused(f"baseImage {path} is not a regular file")
        if info.st_uid not in (0, os.geteuid(), *qemu_uids()):
            raise PolicyRefused(
                f"baseImage {path} is owned by uid {info.st_uid}; bases must be owned by root "
                "(or the agent's user), or their owner can change what guests boot"
            )
        if info.st_mode & 0o022:
            raise PolicyRefused(
                f"baseImage {path} is writable by its group or by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run chmod go-w on it"
            )
        try:
            check_parents(real, what="baseImage")
        except UnsafeDirectory as error:
            raise PolicyRefused(str(error)) from None
        problem = base_header_problem(header, declared_format, path)
        if problem is not None:
            raise PolicyRefused(problem)
        return real

    # ---------------------------------------------------------------------- networks
    def check_network(self, network: str) -> None:
        if self.confined and network not in self.networks:
            shown = ", ".join(self.networks) or "none"
            raise PolicyRefused(
                f"network {network} is not in allowed-networks [{shown}] "
                f"{self._hint('allowed-networks')}"
            )

    def check_bridge(self, bridge: str) -> None:
        if self.confined and bridge not in self.bridges:
            shown = ", ".join(self.bridges) or "none"
            raise PolicyRefused(
                f"bridge {bridge} is not in allowed-bridges [{shown}] "
                f"{self._hint('allowed-bridges')}"
            )

    def check_volume_group(self, what: str, volume_group: str) -> None:
        if self.confined and volume_group not in self.volume_groups:
            shown = ", ".join(self.volume_groups) or "none"
            raise PolicyRefused(
                f"{what} is in volume group {volume_group}, which is not in "
                f"allowed-volume-groups [{shown}] {self._hint('allowed-volume-groups')}"
            )

    # ------------------------------------------------------------------- console logs
    @staticmethod
    def console_log(console_dir: Path, requested: str) -> Path:
        """Where a descriptor's ``consoleLog`` goes: a file name, kept in ``console_dir``
        (under the state directory). A path is accepted only if it already lies there."""
        refuse_nul("consoleLog", requested)
        if "/" not in requested:
            if not _LOG_NAME.fullmatch(requested):
                raise PolicyRefused(
                    f"consoleLog {requested!r} is not a file name (letters, digits, '_', '.' "
                    "and '-', not starting with '.')"
                )
            return resolved(console_dir) / requested
        real = resolved(requested)
        if not Path(requested).is_absolute() or not is_within(real.parent, resolved(console_dir)):
            raise PolicyRefused(
                f"consoleLog {requested} is outside the console directory {console_dir}: "
                "console logs live under the state directory; give a file name "
                '(consoleLog "web.log")'
            )
        return real


#: The users QEMU runs as under qemu:///system (Debian, Fedora). libvirt's DAC driver gives
#: every image of a running guest's chain, bases included, to that user and does not always
#: give a backing file back, so a base of root's may be found owned by it.
QEMU_USERS = ("libvirt-qemu", "qemu")


def qemu_uids() -> tuple[int, ...]:
    """The uids of :data:`QEMU_USERS` that exist on this host."""
    import pwd

    found = []
    for name in QEMU_USERS:
        try:
            found.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return tuple(found)


def local_run_policy(state_dir: Path, euid: int, image_dirs: tuple[Path, ...] = ()) -> HostPolicy:
    """``sdmesh run``: the invoking user runs their own descriptor on their own machine.

    Shell components are allowed (the user could run the commands themselves; sdmesh lends
    no privilege to run them). As root the host allow-lists apply with their defaults
    (``<state-dir>/images`` and the ``image_dirs`` given with ``--allow-image-dir``,
    libvirt's ``default`` network, no bridge, no volume group): a descriptor from elsewhere
    must not make root read /etc/shadow into a guest disk. As anyone else, libvirt
    (qemu:///session) opens files with the user's own rights, so there is nothing to confine.
    """
    return HostPolicy(
        allow_shell=True,
        image_dirs=(state_dir / "images", *image_dirs),
        confined=euid == 0,
        config_file="",
    )
