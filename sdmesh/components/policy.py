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
from dataclasses import dataclass
from pathlib import Path

from sdmesh.language.values import ComponentDescription

#: Where host policy is configured, for the messages (the agent passes its own file).
DEFAULT_CONFIG_FILE = "/etc/sdmesh/sdmesh.toml"
#: sdmesh's own images directory and libvirt's default storage pool (Debian: root, 0711).
DEFAULT_IMAGE_DIRS = (Path("/var/lib/sdmesh/images"), Path("/var/lib/libvirt/images"))
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


def local_run_policy(state_dir: Path, euid: int) -> HostPolicy:
    """``sdmesh run``: the invoking user runs their own descriptor on their own machine.

    Shell components are allowed (the user could run the commands themselves; sdmesh lends
    no privilege to run them). As root the host allow-lists apply with their defaults
    (``<state-dir>/images`` and /var/lib/libvirt/images, libvirt's ``default`` network, no
    bridge, no volume group): a descriptor from elsewhere must not make root read
    /etc/shadow into a guest disk. As anyone else, libvirt (qemu:///session) opens files with
    the user's own rights, so there is nothing to confine.
    """
    return HostPolicy(
        allow_shell=True,
        image_dirs=(state_dir / "images", Path("/var/lib/libvirt/images")),
        confined=euid == 0,
        config_file="",
    )
