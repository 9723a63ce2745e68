"""Gossip agents under test, behind one small interface, and the waits tests and benches share.

Why pluggable: the same multi-host tests and figures must run against HashiCorp Serf (the
baseline, Debian package ``serf``) and against ``sdmesh join``, on the same testbed, so the
two are compared like for like. An agent kind only knows how to start one agent on a host and
how to read that agent's membership view; everything else (timing, faults) is shared.

Views are read in-process through a socket inside the host's namespace (Serf's msgpack RPC,
sdmesh's ``GET /v1/peers``), not by spawning ``serf members``/``sdmesh peers`` per poll: with
60 agents on 2 cores, a process per poll would compete with the agents being measured.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import msgpack

from sdmesh.testing.netns import Host, Proc, Testbed, find_tool

KEY_SIZE = 32


class MemberState(StrEnum):
    """A member's state as one agent sees it, normalised across agent kinds."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"
    UNKNOWN = "unknown"


View = dict[str, MemberState]
"""One agent's membership view: node name → state (itself included)."""


class AgentUnavailable(RuntimeError):
    """This agent kind cannot run on this machine; the message is a skip reason."""


class AgentNotAnswering(RuntimeError):
    """The agent's local API did not answer (not started yet, dead, or too busy)."""


class AgentKind(Protocol):
    """What the harness needs from an agent implementation."""

    name: str

    def unavailable(self) -> str | None:
        """Why this kind cannot run here (a skip reason), or None."""
        ...

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        """Start the agent on ``host`` joining through ``seeds`` (none for the first agent);
        ``key`` overrides the mesh key (a wrong key must keep the agent out)."""
        ...

    def members(self, host: Host) -> View:
        """The agent's current view; raises AgentNotAnswering when it does not answer."""
        ...

    def close(self) -> None:
        """Drop connections to agents (the processes belong to the testbed)."""
        ...


def new_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


# --- HashiCorp Serf ----------------------------------------------------------------------------


_SERF_STATES = {
    "alive": MemberState.ALIVE,
    "failed": MemberState.DEAD,
    "leaving": MemberState.LEFT,
    "left": MemberState.LEFT,
}


class _SerfRpc:
    """Serf's agent RPC (msgpack over TCP): header {Command, Seq}, reply {Seq, Error} + body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=False)
        self.seq = 0

    def call(self, command: str, body: Any = None, *, reply_body: bool = True) -> Any:
        request = msgpack.packb({"Command": command, "Seq": self.seq})
        if body is not None:
            request += msgpack.packb(body)
        self.seq += 1
        self.sock.sendall(request)
        header = self._next()
        if header.get("Error"):
            raise AgentNotAnswering(f"serf rpc {command}: {header['Error']}")
        return self._next() if reply_body else None

    def _next(self) -> Any:
        while True:
            with contextlib.suppress(StopIteration):
                return next(self.unpacker)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("serf closed the rpc connection")
            self.unpacker.feed(data)


class SerfAgent:
    """HashiCorp Serf (``serf agent``), encrypted with the mesh key, LAN profile by default.

    One agent per namespace binds ``ADDR:7946`` and its RPC on ``127.0.0.1:7373``: loopback is
    per namespace, so every agent can use the same RPC address. Seeds are given with ``-join``:
    if the one TCP dial to the seed fails, the agent exits (as Serf users get it by default);
    ``retry_join=SECONDS`` uses ``-retry-join`` instead.
    """

    name = "serf"

    def __init__(
        self,
        testbed: Testbed,
        *,
        key: bytes | None = None,
        port: int = 7946,
        rpc_port: int = 7373,
        profile: str = "lan",
        config: Mapping[str, Any] | None = None,
        log_level: str = "info",
        rpc_timeout: float = 2.0,
        retry_join: float | None = None,
    ) -> None:
        self.testbed = testbed
        self.retry_join = retry_join
        self.key = key if key is not None else new_key()
        self.port = port
        self.rpc_port = rpc_port
        self.profile = profile
        self.config = dict(config or {})
        self.log_level = log_level
        self.rpc_timeout = rpc_timeout
        self._rpc: dict[str, _SerfRpc] = {}
        self._rpc_lock = threading.Lock()  # polls of different hosts run in threads

    def unavailable(self) -> str | None:
        if find_tool("serf") is None:
            return "`serf` not found: install the Debian package serf (HashiCorp Serf)"
        return None

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        reason = self.unavailable()
        if reason:
            raise AgentUnavailable(reason)
        self._drop(host)
        argv = [
            "serf",
            "agent",
            f"-node={host.name}",
            f"-bind={host.address}:{self.port}",
            f"-rpc-addr=127.0.0.1:{self.rpc_port}",
            f"-profile={self.profile}",
            f"-encrypt={base64.b64encode(key if key is not None else self.key).decode()}",
            f"-log-level={self.log_level}",
        ]
        if self.config:
            path = self.testbed.workdir / f"{host.name}.serf.json"
            path.write_text(json.dumps(self.config))
            argv.append(f"-config-file={path}")
        if self.retry_join is None:
            argv += [f"-join={seed.address}:{self.port}" for seed in seeds]
        else:
            argv += [f"-retry-join={seed.address}:{self.port}" for seed in seeds]
            argv.append(f"-retry-interval={self.retry_join}s")
        return self.testbed.run(host, argv, label="serf")

    def members(self, host: Host) -> View:
        try:
            rpc = self._connect(host)
            reply = rpc.call("members")
        except (OSError, ConnectionError, ValueError, msgpack.UnpackException) as error:
            self._drop(host)
            raise AgentNotAnswering(f"serf on {host}: {error}") from error
        except AgentNotAnswering:
            self._drop(host)
            raise
        return {
            m["Name"]: _SERF_STATES.get(m["Status"], MemberState.UNKNOWN) for m in reply["Members"]
        }

    def members_cli(self, host: Host) -> View:
        """The same view through ``serf members -format=json`` (slow: one process per call)."""
        done = self.testbed.exec(
            host, ["serf", "members", "-format=json", f"-rpc-addr=127.0.0.1:{self.rpc_port}"]
        )
        return {
            m["name"]: _SERF_STATES.get(m["status"], MemberState.UNKNOWN)
            for m in json.loads(done.stdout)["members"]
        }

    def _connect(self, host: Host) -> _SerfRpc:
        with self._rpc_lock:
            rpc = self._rpc.get(host.netns)
        if rpc is None:
            sock = self.testbed.socket(host, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.rpc_timeout)
                sock.connect(("127.0.0.1", self.rpc_port))
                rpc = _SerfRpc(sock)
                rpc.call("handshake", {"Version": 1}, reply_body=False)
            except BaseException:
                sock.close()
                raise
            with self._rpc_lock:
                self._rpc[host.netns] = rpc
        return rpc

    def _drop(self, host: Host) -> None:
        with self._rpc_lock:
            rpc = self._rpc.pop(host.netns, None)
        if rpc is not None:
            rpc.sock.close()

    def close(self) -> None:
        with self._rpc_lock:
            for rpc in self._rpc.values():
                rpc.sock.close()
            self._rpc.clear()


# --- sdmesh ------------------------------------------------------------------------------------


_SDMESH_STATES = {state.value: state for state in MemberState}


class SdmeshAgent:
    """``sdmesh join``, driven through the CLI contract of shared/spec/cli.md.

    ``sdmesh join --name N --bind ADDR:PORT --peer SEED:PORT... --key-file K --api 127.0.0.1:P
    --state-dir D`` starts it; its view is ``GET /v1/peers`` on the agent's control socket,
    ``D/api.sock`` (the JSON of ``sdmesh peers --json``: ``[{"name", "address", "state",
    "incarnation", "meta"}]``). A Unix socket is a file, not an address: it is reached from
    any network namespace, and the harness (root, the agent's user) is ``admin`` on it.
    """

    name = "sdmesh"

    def __init__(
        self,
        testbed: Testbed,
        *,
        key: bytes | None = None,
        port: int = 7946,
        api_port: int = 7948,
        command: Sequence[str] = (sys.executable, "-m", "sdmesh"),
        hypervisor: str | None = None,
        extra_args: Sequence[str] = (),
        api_timeout: float = 2.0,
        identities: bool = False,
    ) -> None:
        self.testbed = testbed
        self.identities = identities
        """Give every agent a host key and a certificate from one test CA (issue 12)."""
        self._ca: tuple[Any, Any] | None = None
        self._serial = 0
        self.key = key if key is not None else new_key()
        self.port = port
        self.api_port = api_port
        self.command = list(command)
        self.hypervisor = hypervisor
        self.extra_args = list(extra_args)
        self.api_timeout = api_timeout
        self._checked = False
        self._unavailable: str | None = None

    def unavailable(self) -> str | None:
        if not self._checked:
            self._checked = True
            try:
                done = subprocess.run(
                    [*self.command, "join", "--help"], capture_output=True, text=True, timeout=30
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                self._unavailable = f"sdmesh join not available: {error}"
            else:
                self._unavailable = (
                    None
                    if done.returncode == 0
                    else "sdmesh join not available (`sdmesh join --help` exited "
                    f"{done.returncode}: the mesh agent is not built yet): "
                    + (done.stderr.strip().splitlines() or [""])[-1]
                )
        return self._unavailable

    def home(self, host: Host) -> Path:
        return self.testbed.workdir / f"{host.name}.sdmesh"

    def socket_path(self, host: Host) -> Path:
        """The agent's control socket (its state directory's ``api.sock``)."""
        return self.home(host) / "state" / "api.sock"

    def agent_url(self, host: Host) -> str:
        """``--agent`` for the CLI on ``host``: its agent's socket."""
        return f"unix:{self.socket_path(host)}"

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        reason = self.unavailable()
        if reason:
            raise AgentUnavailable(reason)
        home = self.home(host)
        home.mkdir(exist_ok=True)
        key_file = home / "cluster.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(key if key is not None else self.key).decode() + "\n")
        argv = [
            *self.command,
            "join",
            "--name",
            host.name,
            "--bind",
            f"{host.address}:{self.port}",
            "--key-file",
            str(key_file),
            "--api",
            f"127.0.0.1:{self.api_port}",
            "--state-dir",
            str(home / "state"),
        ]
        for seed in seeds:
            argv += ["--peer", f"{seed.address}:{self.port}"]
        if self.hypervisor:
            argv += ["--hypervisor", self.hypervisor]
        if self.identities:
            argv += ["--config", str(self._enrol(host.name, home))]
        argv += self.extra_args
        return self.testbed.run(host, argv, label="sdmesh")

    def _enrol(self, name: str, home: Path) -> Path:
        """Key and certificate under the state directory (where the agent looks by default),
        and a config file naming the CA; returns the config file."""
        from sdmesh.safeio import write_private
        from sdmesh.trust.identity import sign_certificate
        from sdmesh.trust.keys import OperatorKey

        if self._ca is None:
            ca = OperatorKey.generate("cluster-ca")
            ca_pub = self.testbed.workdir / "ca.pub"
            write_private(ca_pub, ca.public.file_text().encode(), 0o644)
            self._ca = (ca, ca_pub)
        ca, ca_pub = self._ca
        identity = home / "state" / "identity"
        identity.mkdir(parents=True, exist_ok=True)
        key = OperatorKey.generate(name)
        write_private(identity / "host.key", key.file_text().encode(), 0o600)
        self._serial += 1
        now = int(time.time())
        cert = sign_certificate(ca, name, key.public, self._serial, now - 60, now + 86400)
        write_private(identity / "host.cert", cert.file_text().encode(), 0o644)
        config = home / "sdmesh.toml"
        write_private(config, f'identity-ca = "{ca_pub}"\n'.encode(), 0o644)
        return config

    def members(self, host: Host) -> View:
        try:
            peers = json.loads(self._get(host, "/v1/peers"))
        except (OSError, ValueError) as error:
            raise AgentNotAnswering(f"sdmesh on {host}: {error}") from error
        return {p["name"]: _SDMESH_STATES.get(p["state"], MemberState.UNKNOWN) for p in peers}

    def members_cli(self, host: Host) -> View:
        """The same view through ``sdmesh peers --json`` (slow: a Python process per call)."""
        done = self.testbed.exec(
            host,
            [*self.command, "peers", "--json", "--agent", self.agent_url(host)],
        )
        return {
            p["name"]: _SDMESH_STATES.get(p["state"], MemberState.UNKNOWN)
            for p in json.loads(done.stdout)
        }

    def _get(self, host: Host, path: str) -> bytes:
        """A minimal HTTP/1.0 GET on the agent's socket (no client library needed)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.api_timeout)
            sock.connect(str(self.socket_path(host)))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            chunks = []
            while data := sock.recv(1 << 16):
                chunks.append(data)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise ValueError(f"GET {path}: {head[:80]!r}")
        return body

    def close(self) -> None:
        pass


def agent_kind(name: str, testbed: Testbed, **options: Any) -> AgentKind:
    """An agent kind by name ("serf" or "sdmesh")."""
    kinds: dict[str, Callable[..., AgentKind]] = {"serf": SerfAgent, "sdmesh": SdmeshAgent}
    if name not in kinds:
        raise ValueError(f"unknown agent kind {name!r}: choose from {', '.join(kinds)}")
    return kinds[name](testbed, **options)


# --- waiting for views -------------------------------------------------------------------------


def all_alive(names: Sequence[str]) -> Callable[[View], bool]:
    """A view predicate: every name is there and alive."""
    return lambda view: all(view.get(name) == MemberState.ALIVE for name in names)


def reports_gone(name: str) -> Callable[[View], bool]:
    """A view predicate: ``name`` is dead, has left, or was already forgotten."""
    return lambda view: view.get(name, MemberState.DEAD) in (MemberState.DEAD, MemberState.LEFT)


@dataclass
class Convergence:
    """When each observer's view first satisfied a predicate (seconds after ``since``)."""

    times: dict[str, float | None]
    rounds: int = 0
    round_seconds: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(t is not None for t in self.times.values())

    @property
    def last(self) -> float | None:
        """When the last observer got there: the convergence time (None if one never did)."""
        done = [t for t in self.times.values() if t is not None]
        return max(done) if self.complete and done else None

    @property
    def missing(self) -> list[str]:
        return [name for name, t in self.times.items() if t is None]

    @property
    def resolution(self) -> float:
        """Worst time between two polls of the same observer: how late a time can be."""
        return max(self.round_seconds, default=0.0)


def wait_views(
    kind: AgentKind,
    observers: Sequence[Host],
    predicate: Callable[[View], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    since: float | None = None,
    workers: int = 8,
) -> Convergence:
    """Poll the observers not yet satisfied until all are, or ``timeout`` passes.

    An observer counts once its view satisfies the predicate (it is not polled again), so
    each round gets cheaper as the mesh converges. An agent that does not answer yet simply
    counts as not there yet. Up to ``workers`` agents are asked at once, so one slow agent
    does not delay the others' times. Times are ``time.monotonic()`` seconds after ``since``,
    taken when the answer arrived.
    """
    start = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    result = Convergence({h.name: None for h in observers})

    def check(host: Host) -> float | None:
        try:
            ok = predicate(kind.members(host))
        except AgentNotAnswering:
            ok = False
        return time.monotonic() - start if ok else None

    pending = list(observers)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
        while pending:
            round_start = time.monotonic()
            still = []
            for host, when in zip(pending, pool.map(check, pending), strict=True):
                if when is None:
                    still.append(host)
                else:
                    result.times[host.name] = when
            pending = still
            result.rounds += 1
            now = time.monotonic()
            if not pending or now >= deadline:
                result.round_seconds.append(now - round_start)
                break
            time.sleep(min(interval, max(0.0, deadline - now)))
            result.round_seconds.append(time.monotonic() - round_start)
    return result


def wait_answering(kind: AgentKind, hosts: Sequence[Host], *, timeout: float = 10.0) -> None:
    """Wait until every agent's API answers; AgentNotAnswering (with the log tail) if not."""
    got = wait_views(kind, hosts, lambda view: True, timeout=timeout, interval=0.02)
    if not got.complete:
        raise AgentNotAnswering(f"{kind.name} agents not answering after {timeout}s: {got.missing}")


def start_mesh(
    kind: AgentKind,
    hosts: Sequence[Host],
    *,
    seed: Host | None = None,
    ready_timeout: float = 10.0,
) -> list[Proc]:
    """Start the seed, wait for it to answer, then start every other host joining through it
    at once (the mass join). Returns the processes, seed first."""
    seed = seed or hosts[0]
    procs = [kind.start(seed, [])]
    wait_answering(kind, [seed], timeout=ready_timeout)
    procs += [kind.start(h, [seed]) for h in hosts if h != seed]
    return procs


def log_tail(proc: Proc, lines: int = 20) -> str:
    """The end of a process's log, for assertion messages."""
    text = proc.log().splitlines()[-lines:]
    return (
        f"--- {proc.host.name}:{proc.label} (rc={proc.returncode}) {proc.log_path}\n"
        + "\n".join(text)
    )


def describe_views(kind: AgentKind, hosts: Sequence[Host]) -> str:
    """Every host's view on one line each, for assertion messages."""
    out = []
    for host in hosts:
        try:
            view = kind.members(host)
            out.append(f"{host.name}: " + " ".join(f"{n}={s}" for n, s in sorted(view.items())))
        except AgentNotAnswering as error:
            out.append(f"{host.name}: not answering ({error})")
    return "\n".join(out)


__all__ = [
    "AgentKind",
    "AgentNotAnswering",
    "AgentUnavailable",
    "Convergence",
    "MemberState",
    "SdmeshAgent",
    "SerfAgent",
    "View",
    "agent_kind",
    "all_alive",
    "describe_views",
    "log_tail",
    "new_key",
    "reports_gone",
    "start_mesh",
    "wait_answering",
    "wait_views",
]
