"""The control API's Unix socket: created safely, and who is calling (SO_PEERCRED).

Local control follows libvirt, Docker and Incus: a socket owned by root and a group (``sdmesh``),
mode 0660, so the kernel itself keeps everyone else out (``connect`` fails with EACCES; the
agent never sees them). The caller's uid, gid and groups come from the kernel
(SO_PEERCRED, SO_PEERGROUPS), never from anything the caller sends: uid 0 and the agent's own
user are ``admin``; members of the configured groups get their group's role.

Created safely: the directory must be ours and writable by nobody else (else someone could
swap the socket for their own); a file already at the path is removed only if it is our own
socket and nothing answers on it (a stale one from a killed agent); the socket is bound under
umask 0177 (never group- or world-accessible, even for an instant), then given its group and
0660. Without the group, it stays 0600: root (the agent's user) only.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sdmesh.agent.config import ConfigError
from sdmesh.trust.roles import Role

#: The group given the socket, and its role, unless ``api-socket-roles`` says otherwise.
DEFAULT_GROUP = "sdmesh"
DEFAULT_SOCKET_GROUPS: Mapping[str, Role] = {DEFAULT_GROUP: Role.OPERATE}
#: Linux's SO_PEERGROUPS (4.13+); Python names it only on some builds.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MAX_GROUPS = 256


class SocketError(ConfigError):
    """The socket cannot be created safely; the message names the path and why."""


@dataclass(frozen=True)
class PeerCredentials:
    """Who is at the other end of a Unix socket connection, as the kernel says."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


@dataclass(frozen=True)
class BoundSocket:
    """A listening socket ready for aiohttp, and what the agent should say about it."""

    sock: socket.socket
    path: Path
    group: str | None
    """The group given access, or None: root (the agent's user) only."""
    identity: tuple[int, int]
    """(st_dev, st_ino) of the socket file: removed at exit only if it is still ours."""


def _check_directory(directory: Path) -> None:
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SocketError(f"api-socket: {directory} is not a directory (a symlink?)")
    if info.st_uid != os.geteuid():
        raise SocketError(
            f"api-socket: {directory} belongs to uid {info.st_uid}, not to the agent's user: "
            "its owner could replace the socket"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SocketError(
            f"api-socket: {directory} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): they could replace the socket; chmod go-w it"
        )


def _remove_stale(path: Path) -> None:
    """Remove our own socket left by an agent that is gone; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise SocketError(
            f"api-socket: {path} exists and is not this user's socket; remove it if it is "
            "not needed, or choose another api-socket"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketError(f"api-socket: cannot check {path}: {error.strerror}") from None
    else:
        raise SocketError(f"api-socket: another agent is serving {path}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def bind_control_socket(path: Path, group: str | None = DEFAULT_GROUP) -> BoundSocket:
    """A listening Unix socket at ``path``: 0660 and ``group`` if that group exists, else
    0600. SocketError when the place is unsafe or taken."""
    path = Path(os.path.abspath(path))
    _check_directory(path.parent)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as error:
        sock.close()
        raise SocketError(f"api-socket: cannot bind {path}: {error.strerror}") from None
    finally:
        os.umask(previous)
    gid = group_id(group) if group else None
    try:
        if gid is not None:
            try:
                os.chown(path, -1, gid, follow_symlinks=False)
                os.chmod(path, 0o660, follow_symlinks=False)
            except PermissionError:  # not root, and not in that group: ours alone
                gid = None
        sock.listen(128)
        sock.setblocking(False)
        info = os.lstat(path)
    except OSError as error:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise SocketError(f"api-socket: cannot set up {path}: {error.strerror}") from None
    return BoundSocket(sock, path, group if gid is not None else None, (info.st_dev, info.st_ino))


def remove_socket(bound: BoundSocket) -> None:
    """Unlink the socket file if it is still the one we bound (never someone else's)."""
    with contextlib.suppress(OSError):
        info = os.lstat(bound.path)
        if (info.st_dev, info.st_ino) == bound.identity:
            os.unlink(bound.path)


def peer_credentials(sock: socket.socket) -> PeerCredentials | None:
    """The connected peer's pid, uid, gid and groups; None when the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, struct.error):
        return None
    return PeerCredentials(pid, uid, gid, frozenset({gid, *_peer_groups(sock, uid, gid)}))


def _peer_groups(sock: socket.socket, uid: int, gid: int) -> Iterable[int]:
    """The peer's supplementary groups: from the kernel (SO_PEERGROUPS) if it can tell, else
    the group database for its user."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _MAX_GROUPS)
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    except OSError:
        pass
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except (KeyError, OSError):
        return ()


def socket_role(
    credentials: PeerCredentials, groups: Mapping[str, Role], agent_uid: int | None = None
) -> Role | None:
    """The caller's role: ``admin`` for root and the agent's own user, else the best role of
    the configured groups it belongs to; None when it belongs to none."""
    owner = os.geteuid() if agent_uid is None else agent_uid
    if credentials.uid in (0, owner):
        return Role.ADMIN
    best: Role | None = None
    for name, role in groups.items():
        gid = group_id(name)
        if gid is not None and gid in credentials.groups and (best is None or role > best):
            best = role
    return best


__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_SOCKET_GROUPS",
    "BoundSocket",
    "PeerCredentials",
    "SocketError",
    "bind_control_socket",
    "peer_credentials",
    "remove_socket",
    "socket_role",
]
