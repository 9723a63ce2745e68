"""Tokenizer for the SmartFrog description language (shared/spec/sf-language.md §1).

One compiled regular expression with a catch-all group drives ``finditer``, so every input,
including binary garbage, yields either tokens or located errors and never an exception.
Numbers follow the reference manual: an unsuffixed decimal is a Double, ``f``/``F`` makes a
Float, ``l``/``L`` a Long; the leading ``-`` belongs to the number (``(x -5)`` is a syntax
error in SmartFrog too).
"""

from __future__ import annotations

import base64
import binascii
import re

from sdmesh.language.source import Location, Reporter, Source
from sdmesh.language.values import Float32, Long

KEYWORDS = frozenset(
    [
        "APPLY",
        "ASSERT",
        "ATTRIB",
        "DATA",
        "ENVPROPERTY",
        "IENVPROPERTY",
        "IPROPERTY",
        "extends",
        "false",
        "true",
        "HERE",
        "HOST",
        "LAZY",
        "NULL",
        "OPTIONAL",
        "PARENT",
        "PROCESS",
        "PROPERTY",
        "ROOT",
        "TBD",
        "THIS",
        "IF",
        "THEN",
        "ELSE",
        "FI",
        "CONSTANT",
    ]
)

# Whitespace and comments are consumed as the prefix of each token's match, which halves the
# number of matches the tokenizer loop handles.
_TOKEN_RE = re.compile(
    r"""
    (?:[ \t\r\n\f]+|//[^\n]*|/\*.*?\*/)*
    (?:
     (?P<word>(?:[^\W\d]|\$)[\w.\-+@\#~$%^&]*)
    |(?P<num>-?(?:(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)[fFdD]?|-?\d+[lL]?)
    |(?P<str>"(?:[^"\\\n\r]|\\.)*")
    |(?P<bcopen>/\*)
    |(?P<punct>\[\||\|\]|--|\+\+|<>|==|!=|>=|<=|&&|\|\||->|[;,{}\[\]:()!+\-*/><%\u2013\u2014])
    |(?P<dir>\#include\?|\#include|\#codebase)
    |(?P<bytes>\#(?:HEX|DEC|OCT|BIN|B64)\#[^#]*\#)
    |(?P<mls>\#\#(?:[^#\\]|\\.)*\#)
    |(?P<strbad>"[^"\n\r]*)
    |(?P<bad>.)
    |(?P<end>\Z)
    )
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPE_RE = re.compile(r"\\([0-3][0-7]{2}|[0-7]{1,2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", "r": "\r", "f": "\f", "\\": "\\"}
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
#: Stop lexing a file after this many bad characters: it is almost certainly not a descriptor.
MAX_LEX_ERRORS = 10


class Token:
    """A token: ``kind`` is a keyword or punctuation text, or WORD/STRING/NUMBER/BYTES/EOF."""

    __slots__ = ("kind", "offset", "value")

    def __init__(self, kind: str, value: object, offset: int) -> None:
        self.kind = kind
        self.value = value
        self.offset = offset

    def __repr__(self) -> str:
        return f"Token({self.kind}, {self.value!r}, @{self.offset})"


class _EscapeError(Exception):
    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def _unescape(body: str, extra: str = "'\"") -> str:
    if "\\" not in body:
        return body

    def replace(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] in "01234567":
            return chr(int(esc, 8))
        if esc in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[esc]
        if esc in extra:
            return esc
        raise _EscapeError(f"invalid escape sequence '\\{esc}'", match.start())

    return _ESCAPE_RE.sub(replace, body)


def _number(text: str) -> object:
    last = text[-1]
    if last in "lL":
        return Long(int(text[:-1]))
    if last in "fF":
        return Float32(float(text[:-1]))
    if last in "dD":
        return float(text[:-1])
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


def _byte_array(text: str) -> bytes:
    kind, _, body = text[1:-1].partition("#")
    digits = "".join(body.split())
    if kind == "HEX":
        return bytes.fromhex(digits)
    if kind == "B64":
        return base64.b64decode(digits, validate=True)
    base = {"DEC": 10, "OCT": 8, "BIN": 2}[kind]
    return bytes(int(part, base) for part in body.split())


def tokenize(source: Source, reporter: Reporter) -> list[Token]:
    """Split ``source`` into tokens, reporting bad ones; always ends with an EOF token."""
    tokens: list[Token] = []
    append = tokens.append
    bad_count = 0
    text = source.text
    for match in _TOKEN_RE.finditer(text):
        group = match.lastgroup
        if group == "end" or group is None:
            break
        start = match.start(group)
        value = match.group(group)
        if group == "word":
            append(Token(value if value in KEYWORDS else "WORD", value, start))
        elif group == "punct":
            append(Token(value, value, start))
        elif group == "str":
            try:
                append(Token("STRING", _unescape(value[1:-1]), start))
            except _EscapeError as exc:
                reporter.error(str(exc), Location(source, start + 1 + exc.index))
                append(Token("STRING", value[1:-1], start))
        elif group == "num":
            number = _number(value)
            if type(number) is int and not _INT_MIN <= number <= _INT_MAX:
                reporter.error(
                    f"integer {value} does not fit in 32 bits; write {value}L for a Long",
                    Location(source, start),
                )
            elif isinstance(number, Long) and not _LONG_MIN <= number <= _LONG_MAX:
                reporter.error(f"long {value} does not fit in 64 bits", Location(source, start))
            append(Token("NUMBER", number, start))
        elif group == "mls":
            try:
                append(Token("STRING", _unescape(value[2:-1], "'\"#"), start))
            except _EscapeError as exc:
                reporter.error(str(exc), Location(source, start + 2 + exc.index))
                append(Token("STRING", value[2:-1], start))
        elif group == "dir":
            append(Token(value, value, start))
        elif group == "bytes":
            try:
                append(Token("BYTES", _byte_array(value), start))
            except (ValueError, binascii.Error) as exc:
                reporter.error(f"malformed byte array: {exc}", Location(source, start))
                append(Token("BYTES", b"", start))
        elif group == "bcopen":
            reporter.error("unterminated /* comment", Location(source, start))
            break
        elif group == "strbad":
            reporter.error(
                "unterminated string (strings cannot span lines)", Location(source, start)
            )
            append(Token("STRING", value[1:], start))
        else:
            bad_count += 1
            shown = value if value.isprintable() else f"\\x{ord(value):02x}"
            reporter.error(f"unexpected character '{shown}'", Location(source, start))
            if bad_count >= MAX_LEX_ERRORS:
                reporter.error(
                    "too many unexpected characters; is this a SmartFrog descriptor?",
                    Location(source, start),
                )
                break
    append(Token("EOF", None, len(text)))
    return tokens
