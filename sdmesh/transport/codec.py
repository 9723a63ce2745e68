"""msgpack encoding with strict limits: the only way bytes from the network become objects.

Decoding is the attack surface, so it is narrow: plain types only (nil, bool, int, float, str,
bin, array, map with str/bin keys), no ext types (not even timestamps), no duplicate map keys,
bounded size and nesting, no trailing bytes. Anything else is a :class:`MalformedPacket`.
Encoding applies the same rules so a node never sends what its peers would refuse.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

DEFAULT_MAX_DEPTH = 32


class MalformedPacket(ValueError):
    """Bytes that are not an acceptable msgpack message."""


class OversizePacket(MalformedPacket):
    """Bytes longer than the configured maximum; rejected before any parsing."""


class PayloadTooLarge(ValueError):
    """An outbound object encodes to more than fits (use the stream path for big payloads)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds for one message; ``max_size`` is the encoded (plaintext) size in bytes."""

    max_size: int
    max_depth: int = DEFAULT_MAX_DEPTH


def encode(obj: object, limits: Limits) -> bytes:
    """Pack ``obj``; raises ``TypeError`` for unsupported values, ``PayloadTooLarge`` if big."""
    _check_shape(obj, limits.max_depth, TypeError)
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode message: {exc}") from exc
    if len(data) > limits.max_size:
        raise PayloadTooLarge(f"message encodes to {len(data)} bytes, limit {limits.max_size}")
    return data


def decode(data: bytes, limits: Limits) -> Any:
    """Unpack one message from ``data`` or raise :class:`MalformedPacket`."""
    if len(data) > limits.max_size:
        raise OversizePacket(f"{len(data)} bytes, limit {limits.max_size}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_ext_len=0,
            ext_hook=_reject_ext,
            object_pairs_hook=_unique_map,
        )
    except Exception as exc:  # msgpack documents that "other exceptions" can escape
        raise MalformedPacket(f"{type(exc).__name__}: {exc}") from exc
    _check_shape(obj, limits.max_depth, MalformedPacket)
    return obj


def _reject_ext(code: int, data: bytes) -> object:
    raise MalformedPacket(f"ext type {code} not allowed")


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedPacket("duplicate map key")
    return result


_SCALARS = (type(None), bool, int, float, str, bytes)
_PLAIN_SCALARS = frozenset(_SCALARS)  # exact-type lookup: one hash instead of six isinstance
_KEYS = (str, bytes)


def _check_shape(obj: object, max_depth: int, error: type[Exception]) -> None:
    """Check value types, key types and nesting depth, level by level (no recursion).

    Only non-scalars are carried to the next level: messages are mostly scalars, and this
    walk runs on every message in both directions.
    """
    level = [obj]
    depth = 0
    while level:
        below: list[object] = []
        for item in level:
            if isinstance(item, dict):
                for key in item:
                    if type(key) is not str and not isinstance(key, _KEYS):
                        raise error(f"map key of type {type(key).__name__} not allowed")
                below += [v for v in item.values() if type(v) not in _PLAIN_SCALARS]
            elif isinstance(item, list | tuple):
                below += [v for v in item if type(v) not in _PLAIN_SCALARS]
            elif not isinstance(item, _SCALARS):  # scalar subclasses (IntEnum...) are fine
                raise error(f"value of type {type(item).__name__} not allowed")
            else:
                continue
            if depth >= max_depth:
                raise error(f"nesting deeper than {max_depth}")
        depth += 1
        level = below
