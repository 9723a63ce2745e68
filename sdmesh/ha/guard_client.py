"""The agent's side of the fence guard: arm it with each lease, disarm it on a planned stop.

Sends never raise: a guard that is not installed (or not running) costs a warning once, and
the agent's own fencing still applies while it lives. The arms of lease renewals are sent
and forgotten; the arm before a fenceable VM starts (``arm_confirmed``) waits, at most
``CONFIRM_TIMEOUT``, for the guard to say it holds it: a datagram the guard dropped (a wrong
uid, a full queue, a decode failure) must not let a VM start that nothing would fence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

from sdmesh.ha.guard import Fenceable
from sdmesh.ha.guard_wire import (
    MAX_DATAGRAM,
    STATUS,
    encode_arm,
    encode_disarm,
    is_armed_answer,
)

log = logging.getLogger(__name__)

#: Seconds to wait for the guard's answer to an arm before a start. The guard is a local
#: process answering in well under a millisecond; a guard this slow is treated as absent
#: (the start is refused, and tried again by the shepherd), which costs at most this much
#: of the event loop's time.
CONFIRM_TIMEOUT = 0.25
#: After two confirmations in a row timed out, seconds during which starts are refused at once
#: rather than each waiting ``CONFIRM_TIMEOUT`` again on the event loop (a burst of starts on a
#: hung guard would otherwise delay probe answers and lease renewals).
DEAF_HOLD = 5.0


class GuardClient:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._warned = False
        self._deaf_until = 0.0
        self._timeouts = 0  # confirmations missed in a row

    def arm(self, fence_at: float, until: float, fenceable: Fenceable) -> bool:
        """Fence ``fenceable`` at ``fence_at`` (CLOCK_BOOTTIME) unless armed again first."""
        return self._send(encode_arm(fence_at, until, fenceable))

    def arm_confirmed(
        self, fence_at: float, until: float, fenceable: Fenceable, timeout: float | None = None
    ) -> bool:
        """``arm``, then whether the guard answered that it holds this arm within
        ``timeout`` seconds (False at once for ``DEAF_HOLD`` seconds after one that did
        not: the arm is still sent)."""
        timeout = CONFIRM_TIMEOUT if timeout is None else timeout
        data = encode_arm(fence_at, until, fenceable)
        if time.monotonic() < self._deaf_until:
            self._send(data)
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("")  # autobind: an abstract address the answer can come back to
            sock.settimeout(timeout)
            try:
                sock.sendto(data, self.path)
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    if is_armed_answer(sock.recv(MAX_DATAGRAM), fence_at, len(fenceable)):
                        self._warned = False
                        self._timeouts = 0
                        return True
            except OSError as error:  # socket.timeout is one
                if isinstance(error, TimeoutError):
                    self._timeouts += 1
                    if self._timeouts >= 2:  # twice in a row: not a hiccup
                        self._deaf_until = time.monotonic() + DEAF_HOLD
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "fence guard at %s did not confirm an arm (%s): fenceable VMs do not start",
                        self.path,
                        error.strerror or "no answer",
                    )
        return False

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
