"""``sdmesh-fence-guard``: the fence guard process (agents/sdmesh-fence-guard.service).

It listens on a Unix datagram socket (mode 0600; only root or its own user may speak), keeps
one libvirt connection, and does what ``GuardCore`` decides: destroy the fenceable domains,
pet or close the watchdog. It is deliberately small and synchronous: if libvirt hangs, the
guard hangs with it, stops petting the watchdog, and the watchdog resets the host.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from sdmesh.ha import guard as gc
from sdmesh.ha.guard_wire import MAX_DATAGRAM, GuardMessageError, boottime, decode, encode_armed

log = logging.getLogger("sdmesh.fence-guard")

DEFAULT_SOCKET = "/run/sdmesh-fence-guard/guard.sock"
WDIOC_SETTIMEOUT = 0xC0045706
CREDENTIALS = struct.calcsize("3i")


class Fencer:
    """Destroys running domains whose sdmesh metadata is fenceable, over one connection."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None

    def connection(self) -> Any:
        import libvirt

        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def running(self) -> list[tuple[str, str, str]]:
        """(domain, pool, path) of every running sdmesh domain."""
        import libvirt

        from sdmesh.hypervisor.domain_xml import SDMESH_NS, MalformedMetadata, parse_metadata

        found = []
        for dom in self.connection().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, SDMESH_NS)
                meta = parse_metadata(text)
            except (libvirt.libvirtError, MalformedMetadata):
                continue  # not ours (or unreadable): never fenced
            found.append((dom.name(), meta.pool, meta.path))
        return found

    def fence(self, fenceable: gc.Fenceable) -> gc.FenceDone:
        import libvirt

        destroyed: list[str] = []
        try:
            conn = self.connection()
            for name, pool, path in self.running():
                if gc.matches(fenceable, pool, path):
                    try:
                        conn.lookupByName(name).destroy()
                    except libvirt.libvirtError as error:
                        if conn.lookupByName(name).isActive():
                            return gc.FenceDone(False, tuple(destroyed), str(error))
                    destroyed.append(name)
        except libvirt.libvirtError as error:
            self._conn = None
            return gc.FenceDone(False, tuple(destroyed), str(error))
        return gc.FenceDone(True, tuple(destroyed))


class Watchdog:
    """/dev/watchdog: opened when armed, petted by writes, closed with 'V' when disarmed."""

    def __init__(self, device: str, timeout: float) -> None:
        self.device, self.timeout = device, timeout
        self._fd: int | None = None

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # some devices have a fixed timeout
                fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", max(1, int(self.timeout))))

    def pet(self) -> None:
        if self._fd is not None:
            os.write(self._fd, b"\0")

    def close(self, *, magic: bool) -> None:
        if self._fd is not None:
            if magic:
                os.write(self._fd, b"V")
            os.close(self._fd)
            self._fd = None


class Guard:
    def __init__(self, path: Path, fencer: Fencer, watchdog: Watchdog | None) -> None:
        self.path, self.fencer, self.watchdog = path, fencer, watchdog
        self.core = gc.GuardCore(watchdog.timeout if watchdog else None)
        self.stopping = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.setblocking(False)

    def feed(self, event: gc.Event) -> None:
        pending = list(self.core.handle(event, boottime()))
        while pending:
            action = pending.pop(0)
            if isinstance(action, gc.Fence):
                done = self.fencer.fence(action.fenceable)
                pending += self.core.handle(done, boottime())
            elif isinstance(action, gc.PetWatchdog) and self.watchdog:
                self.watchdog.pet()
            elif isinstance(action, gc.OpenWatchdog) and self.watchdog:
                self.watchdog.open()
            elif isinstance(action, gc.CloseWatchdog) and self.watchdog:
                self.watchdog.close(magic=action.magic)
            elif isinstance(action, gc.Note):
                log.log(logging.getLevelName(action.level.upper()), "%s", action.message)

    def receive(self) -> None:
        while True:
            try:
                data, ancillary, _, sender = self.sock.recvmsg(MAX_DATAGRAM + 1, 64)
            except BlockingIOError:
                return
            uid = _sender_uid(ancillary)
            if uid not in (0, os.getuid()):
                log.warning("datagram from uid %s refused (root or uid %d only)", uid, os.getuid())
                continue
            try:
                message = decode(data)
            except GuardMessageError as error:
                log.warning("datagram refused: %s", error)
                continue
            if message == "status":
                self._answer(sender)
            elif not isinstance(message, str):
                self.feed(message)
                armed = self.core.mode is gc.Mode.ARMED  # not while a fence goes on
                if isinstance(message, gc.Arm) and sender and armed:  # the agent waits for it
                    with contextlib.suppress(OSError):
                        answer = encode_armed(message.fence_at, len(message.fenceable))
                        self.sock.sendto(answer, sender)

    def _answer(self, sender: Any) -> None:
        if not sender:
            return
        status = self.core.status()
        try:
            status["running"] = [list(entry) for entry in self.fencer.running()]
        except Exception as error:  # libvirt away: say so, the rest still helps
            status["running_error"] = str(error)
        with contextlib.suppress(OSError):
            self.sock.sendto(json.dumps(status).encode(), sender)

    def run(self, tick: float) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while not self.stopping:
                if selector.select(tick):
                    self.receive()
                self.feed(gc.Tick())
        self.feed(gc.Terminate())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _pid, uid, _gid = struct.unpack("3i", data[:CREDENTIALS])
            return int(uid)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdmesh-fence-guard",
        description="Destroy this host's fenceable VMs when the sdmesh agent stops renewing.",
    )
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"[{DEFAULT_SOCKET}]")
    parser.add_argument("--hypervisor", default="qemu:///system", help="libvirt URI")
    parser.add_argument("--watchdog", metavar="DEVICE", help="e.g. /dev/watchdog (opt-in)")
    parser.add_argument("--watchdog-timeout", type=float, default=3.0, metavar="SECONDS")
    parser.add_argument("--tick", type=float, default=0.2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    watchdog = Watchdog(args.watchdog, args.watchdog_timeout) if args.watchdog else None
    try:
        guard = Guard(Path(args.socket), Fencer(args.hypervisor), watchdog)
    except OSError as error:
        print(
            f"sdmesh-fence-guard: cannot listen on {args.socket}: {error.strerror}", file=sys.stderr
        )
        return 1

    def stop(*_: object) -> None:
        guard.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("fence guard on %s (hypervisor %s)", args.socket, args.hypervisor)
    guard.run(args.tick)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
