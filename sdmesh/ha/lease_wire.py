"""Lease messages on the sealed stream transport: ``{"rpc": "lease", "m": [...]}``.

A request (``LeaseRequest``, ``ReclaimQuery``) is one stream request; its answer (a grant, a
revocation, a reclaim answer) is the response, in the same shape. Plain lists, so msgpack
carries them; anything malformed is refused with ``LeaseWireError`` and changes nothing.
"""

from __future__ import annotations

import math

from sdmesh.ha import lease as ls

RPC = "lease"
MAX_NAME = 256
MAX_TICKETS = 64


class LeaseWireError(ValueError):
    """A lease message that is not one (the reason never quotes the content)."""


def encode(message: ls.Message) -> dict[str, object]:
    return {"rpc": RPC, "m": _fields(message)}


def _fields(message: ls.Message) -> list[object]:
    if isinstance(message, ls.LeaseRequest):
        return ["req", message.holder, message.seq, message.term, list(message.acked)]
    if isinstance(message, ls.LeaseGrant):
        return ["grant", message.voter, message.holder, message.seq]
    if isinstance(message, ls.LeaseRevoked):
        return ["revoked", message.voter, message.holder, list(message.tickets)]
    if isinstance(message, ls.ReclaimQuery):
        return ["reclaim", message.asker, message.holder, message.ticket]
    return ["answer", message.voter, message.holder, message.ticket, message.remaining]


def decode(obj: object) -> ls.Message:
    if not isinstance(obj, dict) or obj.get("rpc") != RPC:
        raise LeaseWireError("not a lease message")
    fields = obj.get("m")
    if not isinstance(fields, list) or not fields:
        raise LeaseWireError("lease message without fields")
    kind, rest = fields[0], fields[1:]
    if kind == "req" and len(rest) == 4:
        holder, seq, term, acked = rest
        return ls.LeaseRequest(
            _name(holder), _count(seq), _seconds(term), tuple(_names(acked, "acked"))
        )
    if kind == "grant" and len(rest) == 3:
        return ls.LeaseGrant(_name(rest[0]), _name(rest[1]), _count(rest[2]))
    if kind == "revoked" and len(rest) == 3:
        return ls.LeaseRevoked(_name(rest[0]), _name(rest[1]), tuple(_names(rest[2], "tickets")))
    if kind == "reclaim" and len(rest) == 3:
        return ls.ReclaimQuery(_name(rest[0]), _name(rest[1]), _name(rest[2]))
    if kind == "answer" and len(rest) == 4:
        remaining = None if rest[3] is None else _seconds(rest[3])
        return ls.ReclaimAnswer(_name(rest[0]), _name(rest[1]), _name(rest[2]), remaining)
    raise LeaseWireError("unknown lease message kind or wrong field count")


def _name(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise LeaseWireError(f"a name must be a string of 1-{MAX_NAME} characters")
    return value


def _names(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_TICKETS:
        raise LeaseWireError(f"{what} must be a list of at most {MAX_TICKETS} names")
    return [_name(item) for item in value]


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise LeaseWireError("a sequence number must be a non-negative integer")
    return value


def _seconds(value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value <= 86400
    ):
        raise LeaseWireError("a duration must be 0-86400 seconds")
    return float(value)
