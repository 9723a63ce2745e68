"""Source text, locations and compiler-style diagnostics.

Every error a user can cause in a descriptor is reported as ``FILE:LINE:COL: error: MESSAGE``
followed by the offending line and a caret (shared/spec/cli.md). Locations store a character
offset and compute line/column lazily, so the lexer pays nothing for positions nobody prints.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]

#: Stop collecting after this many errors in one run: past it, more noise helps nobody.
MAX_ERRORS = 50


class Source:
    """One descriptor file's text, with a line table built on first use."""

    __slots__ = ("_line_starts", "name", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._line_starts: list[int] | None = None

    def _starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            find = self.text.find
            pos = find("\n")
            while pos >= 0:
                starts.append(pos + 1)
                pos = find("\n", pos + 1)
            self._line_starts = starts
        return self._line_starts

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        starts = self._starts()
        index = bisect.bisect_right(starts, offset) - 1
        return index + 1, offset - starts[index] + 1

    def line_text(self, line: int) -> str:
        starts = self._starts()
        if not 1 <= line <= len(starts):
            return ""
        start = starts[line - 1]
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[start:end].rstrip("\r")

    def __repr__(self) -> str:
        return f"Source({self.name!r})"


class Location:
    """A point in a source file (offset based; line and column derived on demand)."""

    __slots__ = ("offset", "source")

    def __init__(self, source: Source, offset: int) -> None:
        self.source = source
        self.offset = offset

    @property
    def line(self) -> int:
        return self.source.line_col(self.offset)[0]

    @property
    def col(self) -> int:
        return self.source.line_col(self.offset)[1]

    def __str__(self) -> str:
        line, col = self.source.line_col(self.offset)
        return f"{self.source.name}:{line}:{col}"

    def __repr__(self) -> str:
        return f"Location({self})"


@dataclass(frozen=True)
class Diagnostic:
    """One message about a descriptor, with where it happened and optional notes."""

    severity: Severity
    message: str
    location: Location | None = None
    notes: tuple[tuple[str, Location | None], ...] = ()

    def format(self) -> str:
        lines = [_format_one(self.severity, self.message, self.location)]
        for text, where in self.notes:
            lines.append(_format_one("note", text, where))
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        loc = self.location
        return {
            "severity": self.severity,
            "message": self.message,
            "file": loc.source.name if loc else None,
            "line": loc.line if loc else None,
            "column": loc.col if loc else None,
        }


def _format_one(severity: str, message: str, where: Location | None) -> str:
    if where is None:
        return f"sdmesh: {severity}: {message}"
    line, col = where.source.line_col(where.offset)
    text = where.source.line_text(line)
    # Tabs would misalign the caret: expand them in the shown line and in the caret offset.
    prefix = text[: col - 1].expandtabs(8)
    shown = text.expandtabs(8)
    if len(shown) > 200:  # a minified or binary line: show a window around the caret
        start = max(0, len(prefix) - 80)
        shown = "..." + shown[start : start + 160]
        prefix = "..." + prefix[start:]
    caret = " " * len(prefix) + "^"
    return f"{where.source.name}:{line}:{col}: {severity}: {message}\n    {shown}\n    {caret}"


class DescriptorError(Exception):
    """Raised when a descriptor cannot be processed; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__(self.format())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def format(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


class TooManyErrors(Exception):
    """Internal: unwinds processing once MAX_ERRORS have been collected."""


@dataclass
class Reporter:
    """Collects diagnostics across the phases of one resolution."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    error_count: int = 0
    #: Notes appended to every diagnostic, e.g. the chain of ``#include`` sites.
    context: list[tuple[str, Location | None]] = field(default_factory=list)

    def error(
        self,
        message: str,
        location: Location | None,
        notes: tuple[tuple[str, Location | None], ...] = (),
    ) -> None:
        self._add("error", message, location, notes)
        self.error_count += 1
        if self.error_count >= MAX_ERRORS:
            self.diagnostics.append(Diagnostic("note", f"stopping after {MAX_ERRORS} errors", None))
            raise TooManyErrors

    def warning(
        self,
        message: str,
        location: Location | None,
        notes: tuple[tuple[str, Location | None], ...] = (),
    ) -> None:
        self._add("warning", message, location, notes)

    def _add(
        self,
        severity: Severity,
        message: str,
        location: Location | None,
        notes: tuple[tuple[str, Location | None], ...],
    ) -> None:
        notes = notes + tuple(reversed(self.context))
        self.diagnostics.append(Diagnostic(severity, message, location, notes))

    @property
    def failed(self) -> bool:
        return self.error_count > 0

    def sorted(self) -> list[Diagnostic]:
        """Diagnostics in file order (phases find them in another order)."""

        def key(diagnostic: Diagnostic) -> tuple[int, str, int]:
            where = diagnostic.location
            if where is None:
                return (1, "", 0)
            return (0, where.source.name, where.offset)

        return sorted(self.diagnostics, key=key)

    def raise_if_failed(self) -> None:
        if self.error_count:
            raise DescriptorError(self.sorted())
