"""Strict checks for decoded wire structures.

The transport hands us whatever msgpack produced from an authenticated datagram or stream.
Authentication proves who sent it, not that it is sane: a buggy or compromised peer can still
send wrong types, missing fields or huge values. Every check here raises ``MalformedMessage`` so
the transport can drop and count the packet without the core ever acting on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from sdmesh.finite import non_finite_at
from sdmesh.membership.member import Address, Meta

MAX_NAME_CHARS = 128
"""Node ids are short (a hostname or a key fingerprint)."""
MAX_HOST_CHARS = 253
"""The longest DNS name."""
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1
MAX_META_BYTES = 1024
"""Metadata must ride in one datagram with the alive message around it (budget 1400 bytes)."""
MAX_META_DEPTH = 4
MAX_META_ITEMS = 256
"""Per list or dict inside the metadata."""
MAX_META_SCALAR_BYTES = 512


class MalformedMessage(ValueError):
    """A decoded packet or stream that does not follow the membership wire format."""


def packed_size(obj: object) -> int:
    """Size in bytes of ``obj`` once msgpack-encoded (what the datagram budget counts)."""
    return len(msgpack.packb(obj))


def expect_list(obj: object, length: int, what: str) -> Sequence[Any]:
    """A list (or tuple) of exactly ``length`` items."""
    if not isinstance(obj, list | tuple):
        raise MalformedMessage(f"{what}: expected a list, got {type(obj).__name__}")
    if len(obj) != length:
        raise MalformedMessage(f"{what}: expected {length} fields, got {len(obj)}")
    return obj


def expect_int(obj: object, what: str, low: int = 0, high: int = MAX_UINT64) -> int:
    """An integer in ``[low, high]``; booleans are refused although Python calls them ints."""
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise MalformedMessage(f"{what}: expected an integer, got {type(obj).__name__}")
    if not low <= obj <= high:
        raise MalformedMessage(f"{what}: {obj} outside [{low}, {high}]")
    return obj


def expect_bool(obj: object, what: str) -> bool:
    """A real boolean, not a truthy value."""
    if not isinstance(obj, bool):
        raise MalformedMessage(f"{what}: expected a boolean, got {type(obj).__name__}")
    return obj


def expect_str(obj: object, what: str, max_chars: int) -> str:
    """A non-empty string of at most ``max_chars`` characters."""
    if not isinstance(obj, str):
        raise MalformedMessage(f"{what}: expected a string, got {type(obj).__name__}")
    if not obj or len(obj) > max_chars:
        raise MalformedMessage(f"{what}: length {len(obj)} outside [1, {max_chars}]")
    return obj


def expect_text(obj: object, what: str, max_bytes: int) -> str:
    """A non-empty string of at most ``max_bytes`` bytes once UTF-8 encoded (what goes on
    the wire, unlike ``expect_str`` which counts characters)."""
    if not isinstance(obj, str):
        raise MalformedMessage(f"{what}: expected a string, got {type(obj).__name__}")
    try:
        size = len(obj.encode())
    except UnicodeEncodeError as exc:
        raise MalformedMessage(f"{what}: not encodable as UTF-8") from exc
    if not 1 <= size <= max_bytes:
        raise MalformedMessage(f"{what}: {size} bytes outside [1, {max_bytes}]")
    return obj


def expect_bytes(obj: object, what: str, max_bytes: int) -> bytes:
    """A byte string (possibly empty) of at most ``max_bytes`` bytes."""
    if not isinstance(obj, bytes):
        raise MalformedMessage(f"{what}: expected bytes, got {type(obj).__name__}")
    if len(obj) > max_bytes:
        raise MalformedMessage(f"{what}: {len(obj)} bytes exceeds {max_bytes}")
    return obj


def expect_name(obj: object, what: str = "name") -> str:
    """A member name."""
    return expect_str(obj, what, MAX_NAME_CHARS)


def expect_address(host: object, port: object, what: str = "address") -> Address:
    """A ``(host, port)`` pair with a usable port."""
    return (
        expect_str(host, f"{what} host", MAX_HOST_CHARS),
        expect_int(port, f"{what} port", 1, 65535),
    )


def expect_meta(obj: object) -> Meta:
    """Member metadata: a string-keyed map of msgpack-friendly values within the size budget."""
    if not isinstance(obj, dict):
        raise MalformedMessage(f"meta: expected a map, got {type(obj).__name__}")
    _check_meta_value(obj, depth=0)
    where = non_finite_at(obj, "meta")  # capacities are numbers: NaN and inf place nothing
    if where is not None:
        raise MalformedMessage(f"{where}: numbers must be finite")
    try:
        size = packed_size(obj)
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - checked above
        raise MalformedMessage(f"meta: not encodable: {exc}") from exc
    if size > MAX_META_BYTES:
        raise MalformedMessage(f"meta: {size} bytes exceeds {MAX_META_BYTES}")
    return obj


def _check_meta_value(value: object, depth: int) -> None:
    if value is None or isinstance(value, bool | float):
        return
    if isinstance(value, int):
        if not -(2**63) <= value <= MAX_UINT64:
            raise MalformedMessage("meta: integer out of msgpack range")
        return
    if isinstance(value, str | bytes):
        if len(value) > MAX_META_SCALAR_BYTES:
            raise MalformedMessage("meta: string too long")
        return
    if depth >= MAX_META_DEPTH:
        raise MalformedMessage("meta: nested too deeply")
    if isinstance(value, list | tuple):
        if len(value) > MAX_META_ITEMS:
            raise MalformedMessage("meta: list too long")
        for item in value:
            _check_meta_value(item, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_META_ITEMS:
            raise MalformedMessage("meta: map too large")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_META_SCALAR_BYTES:
                raise MalformedMessage("meta: map keys must be short strings")
            _check_meta_value(item, depth + 1)
        return
    raise MalformedMessage(f"meta: unsupported value type {type(value).__name__}")
