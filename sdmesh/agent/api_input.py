"""Reading what API clients send: JSON bodies.

Anything a client can send must become a 4xx with a reason, never a 500: a body that is not
a JSON object, nesting deep enough to exhaust the parser's stack, strings with lone UTF-16
surrogates (valid JSON, but no UTF-8 encoding: they would fail far later, when the
descriptor is hashed), and ``NaN``, ``Infinity`` or numbers too large for a float, which
Python's ``json`` reads as non-finite floats (sdmesh/finite.py says why they are refused).
Resolving a descriptor is the resolver worker's business (sdmesh/pools/resolve_worker.py: a
separate process with memory, CPU and time limits).

aiohttp is imported inside the functions: the CLI imports ``MAX_REQUEST_BYTES`` from here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sdmesh.finite import non_finite_at

if TYPE_CHECKING:
    from aiohttp import web

#: Largest request body the API reads (aiohttp's ``client_max_size``; 413 beyond). A
#: submission carries the resolved descriptor, so this is also the descriptor size limit.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class BadInput(ValueError):
    """A request body the API cannot use; the message says why (a 400)."""


def parse_json_object(data: bytes) -> dict[str, Any]:
    """``data`` as a JSON object whose strings all encode to UTF-8 and whose numbers are all
    finite; BadInput otherwise."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise BadInput("the body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        raise BadInput("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadInput(f"the body must be a JSON object, not {_json_kind(body)}")
    _check_strings(body)
    where = non_finite_at(body, "body")
    if where is not None:
        raise BadInput(f"{where}: JSON numbers must be finite")
    return body


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), "a number")


def _check_strings(body: object) -> None:
    """Refuse lone surrogates (``"\\ud800"``) anywhere, keys included; iterative, so depth
    costs no stack."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _encodable(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _encodable(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = json.dumps(text[:40])
        raise BadInput(
            f"the string {shown} is not valid Unicode (a lone UTF-16 surrogate)"
        ) from None


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object (BadInput as in :func:`parse_json_object`); a body
    over ``MAX_REQUEST_BYTES`` is refused by aiohttp with 413."""
    return parse_json_object(await request.read())


__all__ = [
    "MAX_REQUEST_BYTES",
    "BadInput",
    "json_object",
    "parse_json_object",
]
