"""The agent's side of the fence guard: arm it with each lease, disarm it on a planned stop.

Sends never block and never raise: a guard that is not installed (or not running) costs a
warning once, and the agent's own fencing still applies while it lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

from sdmesh.ha.guard import Fenceable
from sdmesh.ha.guard_wire import MAX_DATAGRAM, STATUS, encode_arm, encode_disarm

log = logging.getLogger(__name__)


class GuardClient:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._warned = False

    def arm(self, fence_at: float, until: float, fenceable: Fenceable) -> bool:
        """Fence ``fenceable`` at ``fence_at`` (CLOCK_BOOTTIME) unless armed again first."""
        return self._send(encode_arm(fence_at, until, fenceable))

    def disarm(self, reason: str) -> bool:
        return self._send(encode_disarm(reason))

    def _send(self, data: bytes) -> bool:
        try:
            self._sock.sendto(data, self.path)
        except OSError as error:
            if not self._warned:
                self._warned = True
                log.warning(
                    "fence guard at %s unreachable (%s): VMs are fenced only while the agent lives",
                    self.path,
                    error.strerror,
                )
            return False
        self._warned = False
        return True

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The guard's state (mode, deadlines, what it destroyed, running sdmesh domains)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("")  # autobind: an abstract address the answer can come back to
            sock.settimeout(timeout)
            try:
                sock.sendto(STATUS, self.path)
                data = sock.recv(MAX_DATAGRAM)
            except OSError:
                return None
        with contextlib.suppress(ValueError):
            answer = json.loads(data)
            if isinstance(answer, dict):
                return answer
        return None

    def close(self) -> None:
        self._sock.close()
