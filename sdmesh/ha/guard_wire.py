"""What the agent and the fence guard say over the guard's Unix datagram socket.

One JSON object per datagram: ``{"op": "arm", "fence_at": T, "until": U, "fenceable":
[[pool, path], ...]}``, ``{"op": "disarm", "reason": "..."}`` or ``{"op": "status"}`` (the
answer goes back to the sender's bound address). An arm from a bound address is answered
``{"op": "armed", "fence_at": T, "count": N}`` once the guard holds it: the agent waits for
that before it starts a fenceable VM (a datagram sent is not a datagram taken). Times are
``CLOCK_BOOTTIME`` seconds: the agent and the guard share the host's clock, and it keeps
counting through a suspend.
"""

from __future__ import annotations

import json
import math
import time

from sdmesh.ha.guard import Arm, Disarm, Fenceable

#: A datagram larger than this is refused (about 3,000 fenceable VMs).
MAX_DATAGRAM = 256 * 1024
MAX_NAME = 256


class GuardMessageError(ValueError):
    """A datagram the guard refuses; the message says why (never quoting its content)."""


def boottime() -> float:
    """The clock both sides use."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def encode_arm(fence_at: float, until: float, fenceable: Fenceable) -> bytes:
    pairs = sorted([pool, path] for pool, path in fenceable)
    message = {"op": "arm", "fence_at": fence_at, "until": until, "fenceable": pairs}
    return json.dumps(message, separators=(",", ":")).encode()


def encode_disarm(reason: str) -> bytes:
    return json.dumps({"op": "disarm", "reason": reason[:MAX_NAME]}).encode()


STATUS = json.dumps({"op": "status"}).encode()


def encode_armed(fence_at: float, count: int) -> bytes:
    """The guard's answer to an arm it took."""
    return json.dumps({"op": "armed", "fence_at": fence_at, "count": count}).encode()


def is_armed_answer(data: bytes, fence_at: float, count: int) -> bool:
    """Whether ``data`` is the guard's answer to the arm ``(fence_at, count)``."""
    try:
        answer = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(answer, dict)
        and answer.get("op") == "armed"
        and answer.get("fence_at") == fence_at
        and answer.get("count") == count
    )


def decode(data: bytes) -> Arm | Disarm | str:
    """The event a datagram carries, or ``"status"``; ``GuardMessageError`` otherwise."""
    if len(data) > MAX_DATAGRAM:
        raise GuardMessageError(f"datagram of {len(data)} bytes (at most {MAX_DATAGRAM})")
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GuardMessageError("not a JSON object") from None
    if not isinstance(message, dict):
        raise GuardMessageError("not a JSON object")
    op = message.get("op")
    if op == "status":
        return "status"
    if op == "disarm":
        reason = message.get("reason", "")
        if not isinstance(reason, str):
            raise GuardMessageError("disarm: reason must be a string")
        return Disarm(reason[:MAX_NAME])
    if op != "arm":
        raise GuardMessageError("op must be arm, disarm or status")
    fence_at, until = message.get("fence_at"), message.get("until")
    for name, value in (("fence_at", fence_at), ("until", until)):
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise GuardMessageError(f"arm: {name} must be a finite number")
    assert isinstance(fence_at, int | float) and isinstance(until, int | float)
    if until < fence_at:
        raise GuardMessageError("arm: until comes before fence_at")
    pairs = message.get("fenceable")
    if not isinstance(pairs, list):
        raise GuardMessageError("arm: fenceable must be a list of [pool, path] pairs")
    fenceable: set[tuple[str, str]] = set()
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) and 0 < len(p) <= MAX_NAME for p in pair)
        ):
            raise GuardMessageError("arm: fenceable must be a list of [pool, path] pairs")
        fenceable.add((pair[0], pair[1]))
    return Arm(float(fence_at), float(until), frozenset(fenceable))
