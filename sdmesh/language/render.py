"""Printing resolved descriptions: JSON (``sdmesh show --json``) and SmartFrog text.

JSON follows shared/spec/cli.md: attributes in descriptor order, components as nested
objects, vectors as arrays, ``NULL`` as ``null``, and a LAZY reference that survives to run
time as ``{"$lazy": "<reference as written, canonical form>"}``. The text form is valid
SmartFrog that parses back to the same tree.
"""

from __future__ import annotations

import base64
import re

from sdmesh.language.lexer import KEYWORDS
from sdmesh.language.values import NULL, TBD, Apply, ComponentDescription, Float32, Long, Reference

_WORD = re.compile(r"(?:[^\W\d]|\$)[\w.\-+@#~$%^&]*\Z")
_STRING_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\b": "\\b",
    "\f": "\\f",
}


def format_name(name: str) -> str:
    """An attribute or reference name; quoted when it is not a plain word."""
    if _WORD.match(name) and name not in KEYWORDS:
        return name
    return format_string(name)


def format_string(text: str) -> str:
    out = []
    for char in text:
        escaped = _STRING_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def format_value(value: object) -> str:
    """One simple value as SmartFrog source."""
    if value is NULL:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Long):
        return f"{int(value)}L"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Float32):
        return f"{float(value)!r}F"
    if isinstance(value, float):
        text = repr(value)
        return text if "." in text or "e" in text else f"{text}.0"
    if isinstance(value, str):
        return format_string(value)
    if isinstance(value, bytes):
        return "#B64#" + base64.b64encode(value).decode() + "#"
    if isinstance(value, Reference):
        prefix = "LAZY " if value.lazy else "DATA " if value.data else ""
        return prefix + value.canonical()
    if isinstance(value, TBD):
        return "TBD"
    if isinstance(value, list):
        items = ", ".join(format_value(item) for item in value)
        if all(_is_primitive(item) for item in value):
            return f"[|{items}|]"
        return f"[{items}]"
    if isinstance(value, Apply):
        body = " ".join(
            f"{format_name(name)} {format_value(attr.value)};"
            for name, attr in value.args.attrs.items()
        )
        prefix = "LAZY " if value.lazy else ""
        return f"{prefix}APPLY {{ sfFunctionClass {format_string(value.function)}; {body} }}"
    return format_string(str(value))


def _is_primitive(value: object) -> bool:
    if isinstance(value, list):
        return all(_is_primitive(item) for item in value)
    return not isinstance(value, Reference | Apply | TBD | ComponentDescription)


def to_sf(cd: ComponentDescription, name: str = "sfConfig", indent: int = 0) -> str:
    """Render a resolved description as SmartFrog source."""
    lines: list[str] = []
    _render(cd, name, indent, lines)
    return "\n".join(lines) + "\n"


def _render(cd: ComponentDescription, name: str, indent: int, lines: list[str]) -> None:
    pad = "    " * indent
    flag = "" if cd.eager else "DATA "
    if not cd.attrs:
        lines.append(f"{pad}{format_name(name)} extends {flag}{{}}")
        return
    lines.append(f"{pad}{format_name(name)} extends {flag}{{")
    for child_name, attr in cd.attrs.items():
        tags = f"[{', '.join(sorted(attr.tags))}] " if attr.tags else ""
        value = attr.value
        if isinstance(value, ComponentDescription):
            before = len(lines)
            _render(value, child_name, indent + 1, lines)
            if tags:
                lines[before] = lines[before].replace(pad + "    ", pad + "    " + tags, 1)
        else:
            lines.append(f"{pad}    {tags}{format_name(child_name)} {format_value(value)};")
    lines.append(f"{pad}}}")


def to_json(value: object) -> object:
    """A resolved value as JSON-ready data (shared/spec/cli.md ``show --json``)."""
    if isinstance(value, ComponentDescription):
        return {name: to_json(attr.value) for name, attr in value.attrs.items()}
    if value is NULL:
        return None
    if isinstance(value, bool | int | float | str):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return "NaN"
        return value
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, Reference):
        if value.lazy:
            return {"$lazy": value.canonical()}
        return {"$data": value.canonical()}
    if isinstance(value, Apply):
        return {"$lazy": format_value(value)[len("LAZY ") :] if value.lazy else format_value(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    return str(value)
