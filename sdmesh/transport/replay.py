"""Replay protection: a sliding window per sender session, as in IPsec and DTLS.

Each sender session numbers its frames 0, 1, 2, ... The receiver remembers the highest number
seen and a bitmap of the ``size`` numbers below it, so reordering within the window is fine
while duplicates and anything older than the window are refused. Sessions are tracked in a
bounded LRU table: only authenticated frames create entries, and even a key holder churning
session ids cannot grow memory past ``max_senders``. A restarted sender picks a new random
session id and so starts with a fresh window.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_WINDOW = 128
DEFAULT_MAX_SENDERS = 4096


class ReplayWindow:
    """Highest sequence number seen plus a bitmap of the ``size`` numbers at and below it."""

    __slots__ = ("_bitmap", "_highest", "_mask", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self._mask = (1 << size) - 1
        self._highest = -1
        self._bitmap = 0  # bit i set: sequence number highest - i was seen

    def check(self, seq: int) -> bool:
        """Whether ``seq`` would be accepted (no state change)."""
        if seq > self._highest:
            return True
        offset = self._highest - seq
        return offset < self.size and not (self._bitmap >> offset) & 1

    def accept(self, seq: int) -> bool:
        """Record ``seq`` if new and inside the window; False for a replay or a too-old one."""
        if seq < 0 or not self.check(seq):
            return False
        if seq > self._highest:
            shift = seq - self._highest
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self._highest = seq
        else:
            self._bitmap |= 1 << (self._highest - seq)
        return True


class ReplayGuard:
    """Replay windows for many sender sessions, least recently used evicted first."""

    def __init__(
        self, *, window: int = DEFAULT_WINDOW, max_senders: int = DEFAULT_MAX_SENDERS
    ) -> None:
        if max_senders < 1:
            raise ValueError("max_senders must be positive")
        self._window = window
        self._max_senders = max_senders
        self._sessions: OrderedDict[bytes, ReplayWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sender: object) -> bool:
        return sender in self._sessions

    def check(self, sender: bytes, seq: int) -> bool:
        """Whether ``(sender, seq)`` would be accepted, without recording it."""
        window = self._sessions.get(sender)
        return window is None or window.check(seq)

    def accept(self, sender: bytes, seq: int) -> bool:
        """Record ``(sender, seq)``; False if it is a replay or older than the window."""
        window = self._sessions.get(sender)
        if window is None:
            window = ReplayWindow(self._window)
            if not window.accept(seq):
                return False
            self._sessions[sender] = window
            if len(self._sessions) > self._max_senders:
                self._sessions.popitem(last=False)
            return True
        self._sessions.move_to_end(sender)
        return window.accept(seq)
