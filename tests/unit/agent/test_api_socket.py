"""The control socket: created safely (modes, group, stale sockets, unsafe places refused),
callers from SO_PEERCRED, roles from groups, and the real app answering over it."""

from __future__ import annotations

import grp
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sdmesh.agent.agent import Agent
from sdmesh.agent.api import build_app
from sdmesh.agent.api_socket import (
    PeerCredentials,
    SocketError,
    bind_control_socket,
    peer_credentials,
    remove_socket,
    socket_role,
)
from sdmesh.agent.config import AgentConfig, ConfigError, load_config
from sdmesh.testing.api import socket_call
from sdmesh.transport import load_security
from sdmesh.trust.roles import Role

ROOT = os.geteuid() == 0


def test_without_the_group_the_socket_is_the_agents_alone(tmp_path: Path) -> None:
    bound = bind_control_socket(tmp_path / "api.sock", "sdmesh-no-such-group")
    try:
        info = os.lstat(bound.path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert bound.group is None and info.st_uid == os.geteuid()
    finally:
        bound.sock.close()
        remove_socket(bound)
    assert not bound.path.exists()


@pytest.mark.skipif(not ROOT, reason="giving the socket a group needs root")
def test_with_the_group_it_is_0660_root_and_that_group(tmp_path: Path) -> None:
    bound = bind_control_socket(tmp_path / "api.sock", "daemon")
    try:
        info = os.lstat(bound.path)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (0, grp.getgrnam("daemon").gr_gid)
        assert bound.group == "daemon"
    finally:
        bound.sock.close()
        remove_socket(bound)


def test_a_stale_socket_of_ours_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(path))
    old.close()  # a killed agent's socket: the file stays, nothing answers
    bound = bind_control_socket(path, None)
    bound.sock.close()
    remove_socket(bound)


def test_a_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(SocketError, match="another agent is serving"):
            bind_control_socket(path, None)
        assert path.exists()
    finally:
        live.close()


def test_something_else_at_the_path_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    path.write_text("precious")
    with pytest.raises(SocketError, match="not this user's socket"):
        bind_control_socket(path, None)
    assert path.read_text() == "precious"
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "link.sock"
    link.symlink_to(target)
    with pytest.raises(SocketError, match="not this user's socket"):
        bind_control_socket(link, None)
    assert link.is_symlink() and target.read_text() == "x"


def test_unsafe_directories_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SocketError, match="writable by group or others"):
        bind_control_socket(shared / "api.sock", None)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(SocketError, match="not a directory"):
        bind_control_socket(tmp_path / "linked" / "api.sock", None)
    assert isinstance(SocketError("x"), ConfigError), "join reports it as bad configuration"


@pytest.mark.skipif(not ROOT, reason="a directory owned by someone else needs root to make")
def test_a_directory_someone_else_owns_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(SocketError, match="belongs to uid 65534"):
        bind_control_socket(theirs / "api.sock", None)


def test_the_kernel_says_who_is_calling() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        credentials = peer_credentials(left)
    assert credentials is not None
    assert (credentials.pid, credentials.uid) == (os.getpid(), os.geteuid())
    assert os.getegid() in credentials.groups


def test_roles_come_from_uid_and_groups() -> None:
    daemon = grp.getgrnam("daemon").gr_gid
    groups = {"daemon": Role.READ, "sdmesh-no-such-group": Role.ADMIN}
    assert socket_role(PeerCredentials(1, 0, 0, frozenset()), groups) is Role.ADMIN
    owner = PeerCredentials(1, 4242, 4242, frozenset())
    assert socket_role(owner, groups, agent_uid=4242) is Role.ADMIN
    member = PeerCredentials(1, 1, daemon, frozenset({daemon}))
    assert socket_role(member, groups, agent_uid=0) is Role.READ
    assert socket_role(member, {"daemon": Role.OPERATE}, agent_uid=0) is Role.OPERATE
    stranger = PeerCredentials(1, 65534, 65534, frozenset({65534}))
    assert socket_role(stranger, groups, agent_uid=0) is None


def test_the_settings(tmp_path: Path) -> None:
    config = load_config(None, {}, environ={})
    assert config.api_socket is None and config.api_socket_group == "sdmesh"
    assert config.api_socket_roles == (("sdmesh", "operate"),)
    env = {"SDMESH_API_SOCKET_ROLES": "sdmesh=read, wheel=admin", "SDMESH_API_SOCKET": "/run/x"}
    config = load_config(None, {}, environ=env)
    assert config.api_socket_roles == (("sdmesh", "read"), ("wheel", "admin"))
    assert config.api_socket == Path("/run/x")
    path = tmp_path / "sdmesh.toml"
    path.write_text('[api-socket-roles]\nops = "operate"\n')
    assert load_config(path, {}, environ={}).api_socket_roles == (("ops", "operate"),)
    with pytest.raises(ConfigError, match="api-socket-roles: ops: unknown role"):
        load_config(None, {}, environ={"SDMESH_API_SOCKET_ROLES": "ops=root"})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Path]:
    """The real app on a control socket, as the agent serves it."""
    agent = Agent(AgentConfig(name="n0", state_dir=tmp_path), load_security(None, insecure=True))
    runner = web.AppRunner(build_app(agent))
    await runner.setup()
    bound = bind_control_socket(tmp_path / "api.sock", None)
    await web.SockSite(runner, bound.sock).start()
    try:
        yield bound.path
    finally:
        await runner.cleanup()
        remove_socket(bound)


async def test_the_agents_own_user_is_admin_on_its_socket(served: Path) -> None:
    import asyncio

    status, answer = await asyncio.to_thread(socket_call, served, "GET", "/v1/whoami")
    assert status == 200 and answer["role"] == "admin" and answer["via"] == "socket"
    assert answer["name"].startswith(f"uid:{os.geteuid()}(")
    status, made = await asyncio.to_thread(
        socket_call, served, "POST", "/v1/tokens", {"name": "web", "role": "read"}
    )
    assert status == 201 and len(made["token"]) >= 40
