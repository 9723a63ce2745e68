"""Test hosts in Linux network namespaces: real processes, real UDP, faults injected with nft.

Why namespaces: agents must run as separate processes with their own addresses and the real
kernel network stack between them, yet on one machine and without touching its network.

Layout of one ``Testbed`` (run id ``sdm-<pid>-<seq>``)::

    netns sdm-<pid>-<seq>-br      bridge br0, ports p0..pN-1, nft table "bridge sdmtest"
    netns sdm-<pid>-<seq>-<i>     lo up, eth0 = 10.77.0.<i+1>/16 (veth peer of p<i>, MAC
                                  02:77:00:00:00:<i>), a static neighbour entry for every
                                  other host, nothing else (no route out, no IPv6)

The bridge lives in its own namespace, so the root namespace gets no interface, route or rule,
and no test address can reach anything but the testbed's own hosts (the bridge has no uplink).
Two testbeds never share a bridge, so their identical 10.77/16 addresses never meet.

Faults are nft rules on the bridge (``forward`` hook of the bridge family), all in one table
that is rewritten atomically on every change: the hosts' own stacks stay pristine (a send
succeeds and the datagram silently vanishes, as on a real cut cable) and one ``nft -f`` call
changes the faults of any number of hosts at once.

Teardown (``close``, the context manager, ``atexit``, and ``reap_stale`` for runs whose process
died) kills every process inside the namespaces, then deletes them; the veths and nft rules
vanish with them. ``scripts/netns-cleanup`` does the same from a shell.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

PREFIX = "sdm"
"""Every namespace this harness creates is named ``sdm-<pid>-<seq>-...``."""
NETNS_DIR = Path("/run/netns")
SUBNET_PREFIX_LEN = 16
MAX_HOSTS = 250
"""Every host has a static neighbour entry for every other: N*(N-1) entries."""
HOST_IFACE = "eth0"
BRIDGE_IFACE = "br0"
NFT_TABLE = "sdmtest"

Direction = Literal["in", "out", "both"]
T = TypeVar("T")

_NAME_RE = re.compile(rf"^{PREFIX}-(?P<pid>\d+)-(?P<seq>\d+)-(?P<what>br|\d+)$")
_TOOLS = {"ip": "iproute2", "nft": "nftables"}
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_CLONE_NEWNET = 0x40000000
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4
_SEQ = itertools.count()


class NetnsError(RuntimeError):
    """The harness cannot do what was asked; the message says what to fix."""


# --- environment checks ------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """Path of ``name``, also looking in the sbin directories a non-login PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _effective_caps() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def skip_reason(*, need_nft: bool = True) -> str | None:
    """Why namespace tests cannot run here, or None when they can (the text is for a skip)."""
    if os.environ.get("SDMESH_NETNS", "1") == "0":
        return "SDMESH_NETNS=0: network-namespace tests disabled"
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, veth pairs and nft rules"
    caps = _effective_caps()
    if not (caps >> _CAP_SYS_ADMIN) & 1 or not (caps >> _CAP_NET_ADMIN) & 1:
        return "root without CAP_SYS_ADMIN and CAP_NET_ADMIN (unprivileged container?)"
    tools = ("ip", "nft") if need_nft else ("ip",)
    for tool in tools:
        if find_tool(tool) is None:
            return f"`{tool}` not found: install the Debian package {_TOOLS[tool]}"
    return None


def require(*, need_nft: bool = True) -> None:
    """Raise NetnsError with the reason when namespace tests cannot run here."""
    reason = skip_reason(need_nft=need_nft)
    if reason:
        raise NetnsError(reason)


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise NetnsError(f"`{name}` not found: install the Debian package {_TOOLS[name]}")
    return path


def _ip(*args: str, netns: str | None = None, batch: Sequence[str] = ()) -> None:
    """Run ``ip`` (with ``-batch -`` when lines are given); raise with its stderr on failure."""
    argv = [_tool("ip")]
    if netns:
        argv += ["-n", netns]
    if batch:
        argv += ["-batch", "-"]
    argv += list(args)
    done = subprocess.run(
        argv, input="\n".join(batch) + "\n" if batch else None, capture_output=True, text=True
    )
    if done.returncode != 0:
        what = f"ip -batch ({len(batch)} commands)" if batch else " ".join(argv)
        raise NetnsError(f"{what} failed: {done.stderr.strip() or done.returncode}")


# --- entering a namespace from this process ----------------------------------------------------


_libc_lock = threading.Lock()
_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    with _libc_lock:
        if _libc_handle is None:
            _libc_handle = ctypes.CDLL(None, use_errno=True)
        return _libc_handle


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh thread that has entered ``netns``; return its result.

    The network namespace is per thread, and a socket keeps the namespace it was created in:
    sockets made this way let one process talk to every host without a subprocess per call.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            results.append(fn())
        except BaseException as error:  # handed to the caller's thread below
            errors.append(error)

    thread = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def netns_socket(
    netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
) -> socket.socket:
    """A socket living in ``netns`` (bind, connect, send and receive from any thread)."""
    return in_netns(netns, lambda: socket.socket(family, type, proto))


# --- namespaces on this machine ----------------------------------------------------------------


def list_namespaces(prefix: str = PREFIX + "-") -> list[str]:
    """Names under /run/netns starting with ``prefix`` (what ``ip netns list`` shows)."""
    try:
        return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix))
    except FileNotFoundError:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_in(netns_names: Iterable[str]) -> dict[int, str]:
    """Processes inside the named namespaces: {pid: namespace}, from one scan of /proc."""
    inodes: dict[int, str] = {}
    for name in netns_names:
        with contextlib.suppress(OSError):
            inodes[os.stat(NETNS_DIR / name).st_ino] = name
    found: dict[int, str] = {}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")  # "net:[4026532210]"
        except OSError:
            continue
        inode = int(link[link.index("[") + 1 : -1])
        if inode in inodes:
            found[int(entry)] = inodes[inode]
    return found


def _kill_and_wait(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL every pid, wait until they are gone; return the ones still there."""
    pending = set(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            # A zombie is dead; its parent reaps it (never us here: that would steal the exit
            # status from its Popen).
            if not Path(f"/proc/{pid}").exists() or process_dead(pid):
                pending.discard(pid)
        if pending:
            time.sleep(0.02)
    return sorted(pending)


def process_dead(pid: int) -> bool:
    """Gone, or a zombie (dead; only its parent's wait is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def delete_namespaces(names: Sequence[str]) -> None:
    """Kill everything inside the namespaces, then delete them (missing ones are fine)."""
    names = [name for name in names if (NETNS_DIR / name).exists()]
    if not names:
        return
    left = _kill_and_wait(_pids_in(names))
    if left:
        raise NetnsError(f"processes {left} inside {names} survived SIGKILL")
    with contextlib.suppress(NetnsError):
        _ip("-force", batch=[f"netns del {name}" for name in names])
    remaining = [name for name in names if (NETNS_DIR / name).exists()]
    for name in remaining:  # one by one, for a precise error
        _ip("netns", "del", name)


def reap_stale(*, everything: bool = False) -> list[str]:
    """Delete namespaces of harness runs whose process is gone (all of them with everything).

    Runs at every testbed creation, so a crashed or SIGKILLed run is cleaned up by the next.
    """
    stale = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if match and (everything or not _pid_alive(int(match["pid"]))):
            stale.append(name)
    delete_namespaces(stale)
    return stale


# --- processes ---------------------------------------------------------------------------------


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Proc:
    """A process started inside a host's namespace; output goes to ``log_path``."""

    def __init__(self, host: Host, label: str, popen: subprocess.Popen[bytes], log: Path):
        self.host = host
        self.label = label
        self.popen = popen
        self.log_path = log

    def __repr__(self) -> str:
        return f"Proc({self.host.name}:{self.label} pid={self.pid} rc={self.popen.poll()})"

    @property
    def pid(self) -> int:
        """The program's pid: ``ip netns exec`` execs it in place."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """``kill -9``: no goodbye to the mesh (idempotent)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (a graceful leave), SIGKILL after ``timeout``; the exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (from /proc, so valid while the process lives)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


# --- the testbed -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One test host: a namespace with one interface and one address."""

    index: int
    name: str  # "h3": also the node name agents are given
    netns: str
    address: str
    port: str  # its bridge port, in the bridge namespace (nft rules match on it)

    @property
    def mac(self) -> str:
        """eth0's hardware address, fixed by the index (locally administered)."""
        return f"02:77:00:00:{self.index >> 8:02x}:{self.index & 0xFF:02x}"

    def __str__(self) -> str:
        return f"{self.name}({self.address})"


def _mac_bytes(host: Host) -> bytes:
    return bytes.fromhex(host.mac.replace(":", ""))


def host_address(index: int) -> str:
    """10.77.0.1 for host 0, ... 10.77.0.250 for host 249."""
    return f"10.77.{index // 250}.{index % 250 + 1}"


@dataclass(frozen=True)
class Frame:
    """An Ethernet frame carrying IPv4 UDP, as captured on a host's eth0."""

    raw: bytes
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _parse_udp_frame(raw: bytes) -> Frame | None:
    if len(raw) < 14 + 20 + 8 or struct.unpack_from("!H", raw, 12)[0] != _ETH_P_IP:
        return None
    ip = raw[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != socket.IPPROTO_UDP or len(ip) < ihl + 8:
        return None
    total = struct.unpack_from("!H", ip, 2)[0]
    sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
    src = (socket.inet_ntoa(ip[12:16]), sport)
    dst = (socket.inet_ntoa(ip[16:20]), dport)
    end = min(ihl + length, total, len(ip))
    if end != ihl + length:
        return None  # truncated capture
    # veth offloads checksums, so a captured frame may carry a partial one that its receiver
    # would drop if replayed: put the checksum a real wire would have carried.
    udp = bytearray(ip[ihl:end])
    udp[6:8] = b"\0\0"
    pseudo = ip[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp[6:8] = struct.pack("!H", _icmp_checksum(pseudo + bytes(udp)) or 0xFFFF)
    fixed = raw[: 14 + ihl] + bytes(udp) + raw[14 + end :]
    return Frame(raw=fixed, src=src, dst=dst, payload=bytes(udp[8:]))


def udp_frame(
    src_mac: bytes, dst_mac: bytes, src: tuple[str, int], dst: tuple[str, int], payload: bytes
) -> bytes:
    """An Ethernet + IPv4 + UDP frame with any source: what a forger on the wire can send."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload  # no UDP checksum
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        secrets.randbelow(0xFFFF),
        0x4000,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    header = header[:10] + struct.pack("!H", _icmp_checksum(header)) + header[12:]
    return dst_mac + src_mac + struct.pack("!H", _ETH_P_IP) + header + udp


def _icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071), for ICMP, IPv4 and UDP."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


_LIVE: set[Testbed] = set()


class Testbed:
    """N hosts in network namespaces on one private bridge, with fault injection.

    Use as a context manager (or call ``create``/``close``). Every method that changes the
    network is idempotent; ``close`` leaves nothing behind and may be called more than once.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self, n: int, *, workdir: Path | str | None = None, keep_logs: bool = False
    ) -> None:
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"a testbed has 1..{MAX_HOSTS} hosts, not {n}")
        self.run_id = f"{PREFIX}-{os.getpid()}-{next(_SEQ)}"
        self.bridge_netns = f"{self.run_id}-br"
        self.hosts = [
            Host(i, f"h{i}", f"{self.run_id}-{i}", host_address(i), f"p{i}") for i in range(n)
        ]
        self._own_workdir = workdir is None
        self._keep_logs = keep_logs
        self.workdir = Path(workdir) if workdir is not None else Path()
        self._procs: list[Proc] = []
        self._cut: set[int] = set()
        self._loss: dict[int, tuple[float, Direction]] = {}
        self._partitions: list[tuple[frozenset[int], frozenset[int]]] = []
        self._lock = threading.RLock()
        self._state: Literal["new", "up", "closed"] = "new"

    # -- lifecycle --

    def __enter__(self) -> Testbed:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    @property
    def namespaces(self) -> list[str]:
        return [self.bridge_netns, *(h.netns for h in self.hosts)]

    def create(self) -> None:
        """Build namespaces, bridge, veths and addresses (a few ``ip -batch`` calls)."""
        with self._lock:
            if self._state != "new":
                raise NetnsError(f"testbed {self.run_id} is {self._state}, cannot create it")
            require(need_nft=False)
            reap_stale()
            self._state = "up"
            _LIVE.add(self)
            try:
                if self._own_workdir:
                    self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.run_id}-"))
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._build()
            except BaseException:
                self.close()
                raise

    def _build(self) -> None:
        # Our names carry our pid and a counter unused so far in this process: any that exist
        # were left by an earlier process that had the same pid, and are stale.
        delete_namespaces(self.namespaces)
        _ip(batch=[f"netns add {ns}" for ns in self.namespaces])
        bridge = [
            f"link add {BRIDGE_IFACE} type bridge",
            f"link set {BRIDGE_IFACE} up",
            "link set lo up",
        ]
        for h in self.hosts:
            bridge += [
                f"link add {h.port} type veth peer name {HOST_IFACE} netns {h.netns}",
                f"link set {h.port} master {BRIDGE_IFACE}",
                f"link set {h.port} up",
            ]
        _ip(netns=self.bridge_netns, batch=bridge)
        for h in self.hosts:
            # Static neighbours: the kernel's ARP table is shared by all namespaces (1024
            # entries by default, net.ipv4.neigh.default.gc_thresh3), and N hosts resolving
            # each other need N*(N-1) of them: at N = 60 it overflows and datagrams vanish.
            # Permanent entries are exempt from that limit and need no ARP at all.
            neighbours = [
                f"neigh replace {o.address} lladdr {o.mac} dev {HOST_IFACE} nud permanent"
                for o in self.hosts
                if o != h
            ]
            _ip(
                netns=h.netns,
                batch=[
                    "link set lo up",
                    f"link set {HOST_IFACE} address {h.mac}",
                    f"link set {HOST_IFACE} addrgenmode none",  # IPv4 only: no IPv6 chatter
                    f"addr add {h.address}/{SUBNET_PREFIX_LEN} dev {HOST_IFACE}",
                    f"link set {HOST_IFACE} up",
                    *neighbours,
                ],
            )

    def close(self) -> None:
        """Kill every process, delete every namespace (veths and nft rules go with them)."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            _LIVE.discard(self)
            errors: list[str] = []
            for proc in self._procs:
                with contextlib.suppress(OSError):
                    proc.kill()
            try:
                delete_namespaces(self.namespaces)
            except NetnsError as error:
                errors.append(str(error))
            if self._own_workdir and not self._keep_logs and self.workdir != Path():
                shutil.rmtree(self.workdir, ignore_errors=True)
            if errors:
                raise NetnsError(f"teardown of {self.run_id} incomplete: {'; '.join(errors)}")

    def leftovers(self) -> list[str]:
        """What of this testbed still exists (namespaces, live processes): [] after close."""
        left = [f"netns {name}" for name in self.namespaces if (NETNS_DIR / name).exists()]
        left += [f"process {p.pid} ({p.host.name}:{p.label})" for p in self._procs if p.alive()]
        return left

    def _check_up(self) -> None:
        if self._state != "up":
            raise NetnsError(f"testbed {self.run_id} is {self._state}")

    # -- processes --

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        label: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> Proc:
        """Start ``argv`` inside ``host`` (``ip netns exec``); stdout+stderr go to a log file."""
        with self._lock:
            self._check_up()
            label = label or Path(argv[0]).name
            log = self.workdir / f"{host.name}.{label}.log"
            for n in itertools.count(1):
                if not log.exists():
                    break
                log = self.workdir / f"{host.name}.{label}.{n}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    [_tool("ip"), "netns", "exec", host.netns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C for the test runner is not for agents
                    env=env,
                    cwd=cwd,
                )
            proc = Proc(host, label, popen, log)
            self._procs.append(proc)
            return proc

    def exec(
        self, host: Host, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``host`` and wait for it (output captured as text)."""
        self._check_up()
        done = subprocess.run(
            [_tool("ip"), "netns", "exec", host.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise NetnsError(
                f"{' '.join(argv)} in {host} exited {done.returncode}: {done.stderr.strip()}"
            )
        return done

    def procs(self, host: Host | None = None) -> list[Proc]:
        return [p for p in self._procs if host is None or p.host == host]

    def kill(self, target: Host | Proc) -> None:
        """``kill -9`` a process, or every process inside a host."""
        if isinstance(target, Proc):
            target.kill()
            return
        for proc in self.procs(target):
            proc.kill()
        _kill_and_wait(_pids_in([target.netns]))

    # -- faults (nft on the bridge) --

    def cut(self, *hosts: Host) -> None:
        """Isolate hosts: every frame from or to them is dropped (their link stays up)."""
        with self._lock:
            self._cut.update(h.index for h in hosts)
            self._apply_faults()

    def heal(self, *hosts: Host) -> None:
        """Undo ``cut`` for these hosts (for every host when none is given)."""
        with self._lock:
            if hosts:
                self._cut.difference_update(h.index for h in hosts)
            else:
                self._cut.clear()
            self._apply_faults()

    def loss(self, host: Host, percent: float, direction: Direction = "out") -> None:
        """Drop ``percent`` % of frames, at random, sent by the host ("out", the default),
        sent to it ("in"), or both. 0 removes it. Setting "out" on every host gives each
        datagram exactly ``percent`` % loss, as ``netem loss`` on each host would.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss is a percentage, not {percent}")
        with self._lock:
            if percent == 0:
                self._loss.pop(host.index, None)
            else:
                self._loss[host.index] = (percent, direction)
            self._apply_faults()

    def partition(self, group_a: Iterable[Host], group_b: Iterable[Host]) -> None:
        """No frame between any host of ``group_a`` and any of ``group_b``, either way."""
        a = frozenset(h.index for h in group_a)
        b = frozenset(h.index for h in group_b)
        if a & b:
            raise ValueError("a host cannot be on both sides of a partition")
        with self._lock:
            if a and b and (a, b) not in self._partitions:
                self._partitions.append((a, b))
            self._apply_faults()

    def heal_partitions(self) -> None:
        with self._lock:
            self._partitions.clear()
            self._apply_faults()

    def clear_faults(self) -> None:
        """Remove every cut, loss and partition."""
        with self._lock:
            self._cut.clear()
            self._loss.clear()
            self._partitions.clear()
            self._apply_faults()

    def fault_rules(self) -> list[str]:
        """The nft rules that express the current faults (what ``_apply_faults`` installs)."""

        def ports(indices: Iterable[int]) -> str:
            names = ", ".join(f'"{self.hosts[i].port}"' for i in sorted(indices))
            return f"{{ {names} }}"

        rules = []
        for i in sorted(self._cut):
            rules += [
                f'iifname "{self.hosts[i].port}" drop',
                f'oifname "{self.hosts[i].port}" drop',
            ]
        for a, b in self._partitions:
            rules += [
                f"iifname {ports(a)} oifname {ports(b)} drop",
                f"iifname {ports(b)} oifname {ports(a)} drop",
            ]
        for i, (percent, direction) in sorted(self._loss.items()):
            # numgen over 10000 gives 0.01 % steps ("random mod 100 < N" works too on 1.0.6).
            chance = "" if percent >= 100 else f"numgen random mod 10000 < {round(percent * 100)} "
            chance = "ether type ip " + chance  # ARP is spared: loss means lost datagrams
            port = self.hosts[i].port
            if direction in ("out", "both"):
                rules.append(f'iifname "{port}" {chance}drop')
            if direction in ("in", "both"):
                rules.append(f'oifname "{port}" {chance}drop')
        return rules

    def _apply_faults(self) -> None:
        self._check_up()
        body = "\n".join(f"    {rule}" for rule in self.fault_rules())
        # "add; delete; add" in one transaction: atomic, and idempotent whatever was there.
        script = (
            f"table bridge {NFT_TABLE}\n"
            f"delete table bridge {NFT_TABLE}\n"
            f"table bridge {NFT_TABLE} {{\n"
            "  chain faults {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f"{body}\n"
            "  }\n"
            "}\n"
        )
        done = subprocess.run(
            [_tool("ip"), "netns", "exec", self.bridge_netns, _tool("nft"), "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise NetnsError(f"nft refused the fault rules: {done.stderr.strip()}\n{script}")

    # -- talking to hosts from this process --

    def socket(
        self,
        host: Host,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket inside ``host`` (e.g. to forge datagrams or query an agent's local API)."""
        self._check_up()
        return netns_socket(host.netns, family, type, proto)

    def ping(self, src: Host, dst: Host | str, timeout: float = 1.0) -> bool:
        """One ICMP echo from ``src`` to ``dst``; True when the reply came within ``timeout``."""
        address = dst.address if isinstance(dst, Host) else dst
        ident = secrets.randbelow(0xFFFF)
        payload = secrets.token_bytes(16)
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + payload), ident, 1)
        with self.socket(src, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.sendto(packet + payload, (address, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, (sender, _) = sock.recvfrom(2048)
                except TimeoutError:
                    return False
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, rid, _ = struct.unpack_from("!BBHHH", data, ihl)
                if kind == 0 and rid == ident and sender == address:
                    return True
        return False

    def udp_delivery(
        self, src: Host, dst: Host, count: int = 100, *, port: int = 0, quiet: float = 0.2
    ) -> int:
        """Send ``count`` UDP datagrams src → dst; how many arrived (waits ``quiet`` s of
        silence after the last one)."""
        with (
            self.socket(dst) as receiver,
            self.socket(src) as sender,
        ):
            receiver.bind((dst.address, port))
            target = receiver.getsockname()
            seen: set[int] = set()

            def drain(wait: float | None) -> None:
                receiver.settimeout(wait)
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    while True:
                        seen.add(int.from_bytes(receiver.recv(64)[:4], "big"))

            for n in range(count):
                sender.sendto(n.to_bytes(4, "big"), target)
                if n % 32 == 31:
                    drain(0)  # never let the receive buffer overflow: that is not loss
            drain(quiet)
            return len(seen)

    def sniff(
        self,
        host: Host,
        *,
        udp_port: int | None = None,
        count: int = 10,
        timeout: float = 5.0,
        direction: Literal["in", "out"] = "in",
    ) -> list[Frame]:
        """Capture up to ``count`` IPv4 UDP frames on the host's eth0 (to or from ``udp_port``
        on the host's side), within ``timeout`` seconds. For replay tests: ``inject`` them."""
        frames: list[Frame] = []
        ours = host.address
        with self.socket(host, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)) as s:
            s.bind((HOST_IFACE, 0))
            deadline = time.monotonic() + timeout
            while len(frames) < count and (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    raw, address = s.recvfrom(65535)
                except TimeoutError:
                    break
                outgoing = address[2] == _PACKET_OUTGOING
                if outgoing != (direction == "out"):
                    continue
                frame = _parse_udp_frame(raw)
                if frame is None:
                    continue
                mine = frame.dst if direction == "in" else frame.src
                if mine[0] != ours or (udp_port is not None and mine[1] != udp_port):
                    continue
                frames.append(frame)
        return frames

    def forge_udp(
        self, via: Host, src: tuple[str, int], dst: Host, port: int, payload: bytes
    ) -> None:
        """Send a UDP datagram to ``dst:port`` claiming to come from ``src`` (any address and
        port, a member's included), put on the wire at ``via``'s bridge port."""
        frame = udp_frame(_mac_bytes(via), _mac_bytes(dst), src, (dst.address, port), payload)
        self.inject(via, frame)

    def inject(self, host: Host, frame: Frame | bytes) -> None:
        """Send a raw Ethernet frame out of the host's eth0, unchanged (a replay keeps the
        original addresses, ports and bytes)."""
        raw = frame.raw if isinstance(frame, Frame) else frame
        with self.socket(host, socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            s.bind((HOST_IFACE, 0))
            s.send(raw)


def _close_all_at_exit() -> None:
    for testbed in list(_LIVE):
        with contextlib.suppress(Exception):
            testbed.close()


atexit.register(_close_all_at_exit)
