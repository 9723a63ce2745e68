"""Numbers that arrive from outside (a peer, an API caller, a state file) must be finite.

NaN compares false with everything and infinity outlasts every deadline, so one that slips
into an age check, a timeout, a capacity or an ordering silently defeats it: ``abs(now - nan)
> MAX_AGE`` is false, so an instruction stamped NaN is never too old, and NaN != NaN, so it
is never a replay either. msgpack carries both, and Python's ``json`` reads ``NaN``,
``Infinity`` and ``1e999`` (an infinity) by default. Decoders refuse them where they read a
number (:func:`finite_number`) or, for a whole decoded document such as a JSON body or member
metadata, say where the first one is (:func:`non_finite_at`).

A leaf module: it imports nothing from sdmesh, so every layer may use it.
"""

from __future__ import annotations

import math
from typing import Final

#: How a path names a map key longer than this: its first characters and an ellipsis.
MAX_KEY_SHOWN: Final = 40


def finite_number(value: object) -> int | float | None:
    """``value`` when it is an int or a finite float (never a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def describe(value: float) -> str:
    """A non-finite float as JSON would spell it, were JSON to allow it."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def non_finite_at(document: object, root: str = "$") -> str | None:
    """Where the first non-finite float in a decoded document (maps, lists, scalars) is, as
    a path from ``root`` (``$.capacity.vcpus``, ``$.items[2]``), with what it is; None when
    every number is finite. Iterative: depth costs no stack."""
    stack: list[tuple[object, str]] = [(document, root)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {describe(value)}"
        elif isinstance(value, dict):
            items = [(item, f"{path}{_key(key)}") for key, item in value.items()]
            stack.extend(reversed(items))  # popped in document order
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(value)]))
    return None


def _key(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    if len(text) > MAX_KEY_SHOWN:
        text = text[:MAX_KEY_SHOWN] + "..."
    return f".{text}" if text.isidentifier() else f"[{text!r}]"
