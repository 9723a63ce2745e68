"""Why an inbound frame was dropped, and how many times each reason happened.

Every frame that fails to open or decode is dropped and counted, never acted on; the counters
are how an operator tells a wrong key (``unknown_key``/``auth_failed``) from an attack
(``replay``, ``misdirected``) or a version skew (``bad_version``) before metrics exist.
"""

from __future__ import annotations

import dataclasses
import enum


class DropReason(enum.StrEnum):
    """One counter per reason; the value is the counter's field name."""

    BAD_VERSION = "bad_version"
    UNKNOWN_KEY = "unknown_key"
    AUTH_FAILED = "auth_failed"
    REPLAY = "replay"
    STALE = "stale"
    MALFORMED = "malformed"
    OVERSIZE = "oversize"
    OVERLOAD = "overload"
    MISDIRECTED = "misdirected"
    """Authentic, but sent to another member or on another channel (port): a replay."""
    UNADDRESSED = "unaddressed"
    """Authentic and sent to no one in particular, where only an addressed frame will do."""


class Dropped(Exception):
    """Raised by a codec's ``open`` for a frame that must not be acted on (already counted)."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class DropCounters:
    """Plain counters, one per :class:`DropReason`; ``as_dict`` feeds metrics later."""

    bad_version: int = 0
    unknown_key: int = 0
    auth_failed: int = 0
    replay: int = 0
    stale: int = 0
    malformed: int = 0
    oversize: int = 0
    overload: int = 0
    misdirected: int = 0
    unaddressed: int = 0

    def count(self, reason: DropReason) -> None:
        setattr(self, reason.value, getattr(self, reason.value) + 1)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
