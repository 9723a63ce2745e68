from __future__ import annotations

import pytest

from sdmesh.language.lexer import tokenize
from sdmesh.language.source import Reporter, Source
from sdmesh.language.values import Float32, Long


def lex(text: str) -> tuple[list[tuple[str, object]], list[str]]:
    reporter = Reporter()
    tokens = tokenize(Source("t.sf", text), reporter)
    return [(t.kind, t.value) for t in tokens[:-1]], [d.message for d in reporter.diagnostics]


def test_words_keep_dots_dashes_and_specials() -> None:
    tokens, errors = lex("machine9-dom1 os.name a+b $x _y")
    assert [v for _, v in tokens] == ["machine9-dom1", "os.name", "a+b", "$x", "_y"]
    assert {k for k, _ in tokens} == {"WORD"} and not errors


def test_keywords_are_whole_tokens_only() -> None:
    tokens, _ = lex("LAZY LAZYfoo extends extendsX TBD")
    assert [k for k, _ in tokens] == ["LAZY", "WORD", "extends", "WORD", "TBD"]


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("42", 42, int),
        ("-5", -5, int),
        ("5L", 5, Long),
        ("1.5", 1.5, float),
        ("1.5f", 1.5, Float32),
        ("2.5D", 2.5, float),
        (".5", 0.5, float),
        ("1e3", 1000.0, float),
        ("1.", 1.0, float),
    ],
)
def test_numbers_have_smartfrog_types(text: str, value: object, kind: type) -> None:
    tokens, errors = lex(text)
    assert tokens == [("NUMBER", value)] and type(tokens[0][1]) is kind and not errors


def test_integer_overflow_suggests_long() -> None:
    _, errors = lex("3000000000")
    assert errors == ["integer 3000000000 does not fit in 32 bits; write 3000000000L for a Long"]


def test_string_escapes_including_octal() -> None:
    tokens, errors = lex(r'"a\tb\n\"q\" \101\\"')
    assert tokens == [("STRING", 'a\tb\n"q" A\\')] and not errors


def test_bad_escape_is_located() -> None:
    reporter = Reporter()
    tokenize(Source("t.sf", 'x "ab\\qc";'), reporter)
    (diagnostic,) = reporter.diagnostics
    assert diagnostic.message == "invalid escape sequence '\\q'"
    assert (diagnostic.location.line, diagnostic.location.col) == (1, 6)  # type: ignore[union-attr]


def test_multiline_string() -> None:
    tokens, errors = lex("##first line\nsecond \\# line#")
    assert tokens == [("STRING", "first line\nsecond # line")] and not errors


def test_comments_are_skipped() -> None:
    tokens, _ = lex("a /* block\n comment */ b // line\n c")
    assert [v for _, v in tokens] == ["a", "b", "c"]


def test_unterminated_string_and_comment() -> None:
    assert lex('"abc\n')[1] == ["unterminated string (strings cannot span lines)"]
    assert lex("/* never closed")[1] == ["unterminated /* comment"]


def test_vector_brackets_and_operators() -> None:
    tokens, _ = lex("[|1|] [] ++ <> == != >= <= && || -- ;")
    assert [k for k, _ in tokens] == [
        "[|",
        "NUMBER",
        "|]",
        "[",
        "]",
        "++",
        "<>",
        "==",
        "!=",
        ">=",
        "<=",
        "&&",
        "||",
        "--",
        ";",
    ]


def test_byte_arrays() -> None:
    tokens, errors = lex("#HEX#0aff# #B64#aGk=# #BIN#101 11#")
    assert [v for _, v in tokens] == [b"\n\xff", b"hi", b"\x05\x03"] and not errors


def test_garbage_gives_bounded_errors() -> None:
    _, errors = lex("\x01" * 1000)
    assert len(errors) == 11 and errors[-1].startswith("too many unexpected characters")


def test_includes_are_directive_tokens() -> None:
    tokens, _ = lex('#include "a.sf" #include? "b.sf"')
    assert tokens == [
        ("#include", "#include"),
        ("STRING", "a.sf"),
        ("#include?", "#include?"),
        ("STRING", "b.sf"),
    ]
