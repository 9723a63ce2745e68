"""Local users against a real agent (root only: ``runuser`` switches to ``nobody`` and
``daemon``): the socket refuses strangers, loopback TCP without a token refuses everyone,
nothing is created, the attempts are in the audit log; a group's members get its role.

The agent's socket group is ``daemon`` here (``SDMESH_API_SOCKET_GROUP``), with the role
``read`` (``SDMESH_API_SOCKET_ROLES``): the group ``sdmesh`` need not exist on the test host.
The users run the system's python3 with this tree on their path (they cannot enter root's
home, where the venv's interpreter lives).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

import sdmesh
from sdmesh.testing.api import socket_call

from .test_agent_loopback import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, runuser and /usr/bin/python3 (it runs requests as nobody and daemon)",
)

SHELL_POOL = """#include "org/smartfrog/components.sf"
#include "org/smartfrog/services/shellscript/components.sf"
sfConfig extends Compound {
    sh extends BashShell;
    run extends Script { shell LAZY ATTRIB sh; startScript "id > /tmp/sdmesh-owned"; }
}
"""

#: What a local user tries, stdlib only: the socket, then loopback TCP without a token.
PROBE = r"""
import http.client, json, socket, sys
sock_path, port, descriptor = sys.argv[1], int(sys.argv[2]), sys.argv[3]
found = {}
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    c = http.client.HTTPConnection("localhost")
    c.sock = s
    c.request("GET", "/v1/whoami")
    found["whoami"] = json.loads(c.getresponse().read())
    c = http.client.HTTPConnection("localhost")
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    c.sock = s
    body = json.dumps({"descriptor": descriptor, "name": "owned"})
    c.request("POST", "/v1/pools", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    found["socket_submit"] = [r.status, r.read().decode()]
except PermissionError:
    found["socket"] = "EACCES"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
body = json.dumps({"descriptor": descriptor, "name": "owned"})
c.request("POST", "/v1/pools", body=body, headers={"Content-Type": "application/json"})
r = c.getresponse()
found["tcp_submit"] = [r.status, r.read().decode()]
print(json.dumps(found))
"""


@dataclass
class LocalAgent:
    root: Path
    socket: Path
    api: int
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def local_agent() -> Iterator[LocalAgent]:
    root = Path(tempfile.mkdtemp(prefix="sdmesh-local-", dir="/tmp"))
    root.chmod(0o755)  # others may reach the socket's directory: only the socket's mode stops them
    state = root / "state"
    state.mkdir(mode=0o755)
    gossip, api = free_port(pair=True), free_port()
    log = root / "agent.log"
    env = {
        **os.environ,
        "SDMESH_API_SOCKET_GROUP": "daemon",
        "SDMESH_API_SOCKET_ROLES": "daemon=read",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "sdmesh", "join", "--insecure", "--name", "local"),
                *("--bind", f"127.0.0.1:{gossip}", "--api", f"127.0.0.1:{api}"),
                *("--state-dir", str(state)),
            ],
            stdout=out,
            stderr=out,
            env=env,
        )
    agent = LocalAgent(root, state / "api.sock", api, log, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if socket_call(agent.socket, "GET", "/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield agent
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` under the system's python3 as ``user``, with this tree and its libraries."""
    tree = Path(sdmesh.__file__).resolve().parents[1]
    libraries = Path(click.__file__).resolve().parents[1]
    return subprocess.run(
        [
            *("runuser", "-u", user, "--", "env", f"PYTHONPATH={tree}:{libraries}"),
            *("HOME=/nonexistent", "/usr/bin/python3", *argv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def audit_lines(agent: LocalAgent) -> list[dict[str, object]]:
    lines = []
    for line in agent.log.read_text(errors="replace").splitlines():
        if "sdmesh.audit" in line and "{" in line:
            lines.append(json.loads(line[line.index("{") :]))
    return lines


def test_nobody_gets_nothing_and_is_audited(local_agent: LocalAgent) -> None:
    mode = os.stat(local_agent.socket).st_mode & 0o777
    assert mode == 0o660, oct(mode)
    probe = as_user(
        "nobody", "-c", PROBE, str(local_agent.socket), str(local_agent.api), SHELL_POOL
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["socket"] == "EACCES", "the kernel refuses the socket to strangers"
    status, text = found["tcp_submit"]
    assert status == 401 and "needs a token" in text, "loopback TCP is no credential"
    # Nothing was created, nothing ran.
    assert socket_call(local_agent.socket, "GET", "/v1/pools") == (200, [])
    assert not Path("/tmp/sdmesh-owned").exists()
    # The refused TCP attempt is in the audit log (the socket's refusal is the kernel's).
    refused = [x for x in audit_lines(local_agent) if x["route"] == "/v1/pools"]
    assert len(refused) == 1 and refused[0]["status"] == 401
    assert refused[0]["who"] == "unidentified" and refused[0]["via"] == "tcp"


def test_the_cli_tells_nobody_permission_denied_and_nothing_else(
    local_agent: LocalAgent,
) -> None:
    done = as_user("nobody", "-m", "sdmesh", "status", "--agent", f"unix:{local_agent.socket}")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("sdmesh: error: permission denied:")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_member_of_the_socket_group_gets_its_role(local_agent: LocalAgent) -> None:
    probe = as_user(
        "daemon", "-c", PROBE, str(local_agent.socket), str(local_agent.api), SHELL_POOL
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["whoami"]["role"] == "read" and found["whoami"]["name"] == "uid:1(daemon)"
    status, text = found["socket_submit"]
    assert status == 403 and "needs the operate role" in text
    assert found["tcp_submit"][0] == 401
    assert socket_call(local_agent.socket, "GET", "/v1/pools") == (200, [])
    who = [(x["who"], x["status"]) for x in audit_lines(local_agent)]
    assert ("uid:1(daemon)", 403) in who and ("unidentified", 401) in who


def test_root_is_admin_on_the_socket_with_no_setup(local_agent: LocalAgent) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sdmesh", "status", "--agent", f"unix:{local_agent.socket}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "no pools", done.stderr
    assert socket_call(local_agent.socket, "GET", "/v1/whoami")[1]["role"] == "admin"


def test_a_squatter_on_the_agents_port_never_receives_the_token(
    local_agent: LocalAgent, tmp_path: Path
) -> None:
    """The issue's reproduction: while the agent is down, a local user binds its API port.
    The CLI asks for the agent's proof first, so the squatter never sees the token."""
    import socket
    import threading

    status, made = socket_call(
        local_agent.socket, "POST", "/v1/tokens", {"name": "cli", "role": "read"}
    )
    assert status == 201
    token_file = tmp_path / "cli.token"
    token_file.write_text(made["token"] + "\n")
    token_file.chmod(0o600)
    url = f"http://127.0.0.1:{local_agent.api}"
    cli = [
        sys.executable,
        "-m",
        "sdmesh",
        "status",
        "--agent",
        url,
        "--token-file",
        str(token_file),
    ]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "no pools", done.stderr

    local_agent.process.send_signal(signal.SIGTERM)
    local_agent.process.wait(15)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", local_agent.api))
    squatter.listen()
    received: list[bytes] = []

    def serve() -> None:
        squatter.settimeout(20)
        while True:
            try:
                conn, _ = squatter.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    received.append(conn.recv(65536))
                    body = b'{"proof": "' + b"0" * 64 + b'"}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    received.append(conn.recv(65536))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    finally:
        squatter.close()
        thread.join(5)
    assert done.returncode == 1 and "did not prove" in done.stderr, done.stderr
    assert received and all(made["token"].encode() not in chunk for chunk in received)
    assert all(b"authorization" not in chunk.lower() for chunk in received)
