"""Pool templates: the tutorial's pools as forms, so users fill in fields, not descriptors.

Seed 001 asks for a web interface that hides descriptions and fills up missing fields. A
template is descriptor text with a header of ``// @`` lines, one JSON object each, and
placeholders in its body::

    // @template {"title": "Virtual pool", "description": "..."}
    // @field {"name": "count", "type": "int", "default": 3, "min": 1, "help": "..."}
    sfConfig extends Compound {
    {{#repeat count}}
        vm{{index}} extends VM { memory {{memory}}; }
    {{/repeat}}
    }

``{{field}}`` becomes the field's value as SmartFrog source (``256``, ``"kvm"``,
``[|"a", "b"|]``); an integer is bare digits, so it can also complete a name, as
``{{index}}`` (1, 2, ... inside ``{{#repeat FIELD}}``) does. Every template has the pool
name as its first field (``name``; empty means the caller picks one).

Everything here is pure (text in, text out): reading template files and resolving the
rendered descriptor belong to the callers, which keeps this testable without a library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sdmesh.language.render import format_value
from sdmesh.pools.records import POOL_ID

FIELD_TYPES = ("int", "string", "choice", "bool", "list")
MAX_STRING = 4096
MAX_ITEMS = 256
INDEX = "index"
POOL_FIELD_NAME = "name"

_HEADER = re.compile(r"^//\s*@(template|field)\s+(.*)$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TAG = re.compile(r"\{\{\s*(#repeat\s+(?P<repeat>\w+)|(?P<end>/repeat)|(?P<value>\w+))\s*\}\}")
# A block tag alone on its line leaves no blank line behind.
_BLOCK_LINE = re.compile(r"^[ \t]*(\{\{\s*[#/][^}]*\}\})[ \t]*\n", re.MULTILINE)
_INT = re.compile(r"[+-]?\d{1,18}\Z")


class TemplateFormatError(ValueError):
    """A template file that is not a valid template (a bug in the template, not user input)."""


class TemplateError(ValueError):
    """Field values a template cannot take; ``errors`` maps each bad field to why."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"field {name!r}: {why}" for name, why in self.errors.items()))


@dataclass(frozen=True)
class Field:
    """One form field; ``default`` is already a valid value of ``type``."""

    name: str
    type: str
    default: object
    help: str
    label: str = ""
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "label": self.label or self.name,
        }
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out

    def convert(self, raw: object) -> object:
        """The value ``raw`` (JSON, or a form's string) stands for; ValueError says why not."""
        if self.type == "int":
            return self._int(raw)
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
            raise ValueError("must be true or false")
        if self.type == "choice":
            if not isinstance(raw, str) or raw not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)} (got {raw!r})")
            return raw
        if self.type == "list":
            return self._list(raw)
        return self._string(raw)

    def _int(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError("must be a whole number")
        if isinstance(raw, str):
            if not _INT.match(raw.strip()):
                raise ValueError(f"must be a whole number (got {raw!r})")
            raw = int(raw.strip())
        if self.min is not None and raw < self.min:
            raise ValueError(f"must be at least {self.min} (got {raw})")
        if self.max is not None and raw > self.max:
            raise ValueError(f"must be at most {self.max} (got {raw})")
        return raw

    def _string(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError("must be text")
        if len(raw) > MAX_STRING:
            raise ValueError(f"must be at most {MAX_STRING} characters")
        if any(ord(c) < 0x20 for c in raw):
            raise ValueError("must not contain control characters (line breaks, tabs...)")
        if self.pattern is not None and not re.fullmatch(self.pattern, raw):
            raise ValueError(f"{raw!r} does not have the expected form ({self.help})")
        return raw

    def _list(self, raw: object) -> list[str]:
        if isinstance(raw, str):
            items: Sequence[object] = [item.strip() for item in raw.split(",")]
        elif isinstance(raw, list):
            items = raw
        else:
            raise ValueError("must be a list, or text with items separated by commas")
        out = [self._string(item) for item in items if item != ""]
        if len(out) > MAX_ITEMS:
            raise ValueError(f"must have at most {MAX_ITEMS} items")
        return out


POOL_FIELD = Field(
    POOL_FIELD_NAME,
    "string",
    "",
    "1-63 characters a-z, 0-9, '.', '_' and '-', starting with a letter or digit; "
    "empty: a name is made up",
    label="Pool name",
    pattern=POOL_ID.pattern.removeprefix("^").removesuffix("$"),
)


@dataclass(frozen=True)
class _Repeat:
    field: str
    parts: tuple[_Part, ...]


_Part = str | tuple[str] | _Repeat  # text, ``(name,)`` a placeholder, or a repeated block


@dataclass(frozen=True)
class Template:
    """A parsed template: what the form shows (title, description, fields) and the body."""

    name: str
    title: str
    description: str
    fields: tuple[Field, ...]
    parts: tuple[_Part, ...]

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "fields": [f.to_json() for f in self.fields],
        }


def parse_template(name: str, text: str) -> Template:
    """A template from its file's text; TemplateFormatError names the line at fault."""
    header: dict[str, Any] = {}
    fields: list[Field] = [POOL_FIELD]
    body: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        match = _HEADER.match(line.strip())
        if match is None:
            body.append(line)
            continue
        where = f"template {name}, line {number}"
        try:
            data = json.loads(match.group(2))
        except ValueError as error:
            raise TemplateFormatError(f"{where}: not a JSON object: {error}") from None
        if not isinstance(data, dict):
            raise TemplateFormatError(f"{where}: not a JSON object")
        if match.group(1) == "template":
            header.update(data)
        else:
            fields.append(_parse_field(data, where, {f.name for f in fields}))
    if not isinstance(header.get("title"), str) or not isinstance(header.get("description"), str):
        raise TemplateFormatError(f"template {name}: needs // @template with title, description")
    declared = {f.name: f for f in fields}
    parts = _parse_body(name, _BLOCK_LINE.sub(r"\1", "".join(body)), declared)
    return Template(name, header["title"], header["description"], tuple(fields), parts)


def _parse_field(data: dict[str, Any], where: str, taken: set[str]) -> Field:
    name, kind = data.get("name"), data.get("type")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in taken or name == INDEX:
        raise TemplateFormatError(f"{where}: a field needs a new name (not 'name' or 'index')")
    if kind not in FIELD_TYPES:
        raise TemplateFormatError(f"{where}: field {name}: type must be one of {FIELD_TYPES}")
    if not isinstance(data.get("help"), str) or not data["help"]:
        raise TemplateFormatError(f"{where}: field {name}: needs a help text")
    unknown = set(data) - {"name", "type", "default", "help", "label", "min", "max"}
    unknown -= {"choices", "pattern"}
    if unknown:
        raise TemplateFormatError(f"{where}: field {name}: unknown keys {sorted(unknown)}")
    bounds = [data.get("min"), data.get("max")]
    if any(b is not None and (isinstance(b, bool) or not isinstance(b, int)) for b in bounds):
        raise TemplateFormatError(f"{where}: field {name}: min and max must be integers")
    field = Field(
        name,
        kind,
        None,
        data["help"],
        label=str(data.get("label", "")),
        min=bounds[0],
        max=bounds[1],
        choices=tuple(str(c) for c in data.get("choices", ())),
        pattern=data.get("pattern"),
    )
    if kind == "choice" and not field.choices:
        raise TemplateFormatError(f"{where}: field {name}: a choice needs choices")
    try:
        return replace(field, default=field.convert(data.get("default")))
    except ValueError as error:
        raise TemplateFormatError(f"{where}: field {name}: bad default: {error}") from None


def _parse_body(name: str, body: str, declared: Mapping[str, Field]) -> tuple[_Part, ...]:
    stack: list[tuple[str, list[_Part]]] = [("", [])]
    position = 0
    for tag in _TAG.finditer(body):
        if tag.start() > position:
            stack[-1][1].append(body[position : tag.start()])
        position = tag.end()
        where = f"template {name}: {tag.group(0)}"
        if tag.group("repeat"):
            counter = declared.get(tag.group("repeat"))
            if counter is None or counter.type != "int" or len(stack) > 1:
                raise TemplateFormatError(f"{where}: repeats one int field, and only one level")
            stack.append((counter.name, []))
        elif tag.group("end"):
            if len(stack) == 1:
                raise TemplateFormatError(f"{where}: no repeat to end")
            counter_name, parts = stack.pop()
            stack[-1][1].append(_Repeat(counter_name, tuple(parts)))
        else:
            value = tag.group("value")
            known = value in declared or (value == INDEX and len(stack) > 1)
            if value == POOL_FIELD_NAME or not known:
                raise TemplateFormatError(f"{where}: not a field of the template")
            stack[-1][1].append((value,))
    if len(stack) > 1:
        raise TemplateFormatError(f"template {name}: a repeat is never ended")
    if position < len(body):
        stack[0][1].append(body[position:])
    return tuple(stack[0][1])


def fill(template: Template, given: object) -> dict[str, object]:
    """Every field's value: the given ones checked and converted, the missing ones (absent,
    ``null`` or ``""``, as an untouched form field sends) their defaults. TemplateError lists
    every bad field at once, so a form can mark them all."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise TemplateError({"fields": "must be an object of field name to value"})
    errors: dict[str, str] = {}
    names = [f.name for f in template.fields]
    for key in given:
        if key not in names:
            errors[str(key)] = f"not a field of template {template.name} ({', '.join(names)})"
    values: dict[str, object] = {}
    for field in template.fields:
        raw = given.get(field.name)
        if raw is None or raw == "":
            values[field.name] = field.default
            continue
        try:
            values[field.name] = field.convert(raw)
        except ValueError as error:
            errors[field.name] = str(error)
    if errors:
        raise TemplateError(errors)
    return values


def render(template: Template, values: Mapping[str, object]) -> str:
    """The descriptor text for values from :func:`fill`."""
    out: list[str] = []
    _emit(template.parts, values, out)
    return "".join(out)


def _emit(parts: Sequence[_Part], values: Mapping[str, object], out: list[str]) -> None:
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Repeat):
            count = values[part.field]
            assert isinstance(count, int)
            for index in range(1, count + 1):
                _emit(part.parts, {**values, INDEX: index}, out)
        else:
            out.append(format_value(values[part[0]]))
