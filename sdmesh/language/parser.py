"""Recursive-descent parser for SmartFrog descriptions (shared/spec/sf-language.md §2-§6).

Accepts the union of the SmartDomains-era grammar (``;`` required after simple values,
``x extends;``) and the later one (``;`` optional, multiple prototypes). It builds the
description model directly. Syntax errors are reported with their location and the parser
resynchronises at the next ``;`` or ``}``, so one run reports every error in a file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from sdmesh.language.lexer import KEYWORDS, Token
from sdmesh.language.source import Location, Reporter, Source
from sdmesh.language.values import (
    NULL,
    TBD,
    Apply,
    Attr,
    ComponentDescription,
    Part,
    Placement,
    Reference,
)

#: Deepest nesting of bodies, vectors and parentheses accepted. Real descriptors use < 10;
#: the limit keeps hostile input (20,000 nested braces) from exhausting the Python stack.
MAX_NESTING = 100

NARY_OPERATORS = frozenset({"+", "*", "++", "<>", "&&", "||"})
BINARY_OPERATORS = frozenset({"-", "/", "%", "==", "!=", ">=", ">", "<=", "<", "->"})
_OPERATORS = NARY_OPERATORS | BINARY_OPERATORS
_NAMED_PARTS = frozenset(
    {"ATTRIB", "HERE", "HOST", "PROPERTY", "IPROPERTY", "ENVPROPERTY", "IENVPROPERTY", "CONSTANT"}
)
_BARE_PARTS = frozenset({"ROOT", "PARENT", "THIS", "PROCESS"})
_REFERENCE_START = _NAMED_PARTS | _BARE_PARTS | {"WORD"}
_LITERALS = frozenset({"STRING", "NUMBER", "BYTES"})
_DIRECTIVES = frozenset({"#include", "#include?", "#codebase"})
_ANONYMOUS_COMPAT = frozenset({"-", "\u2013", "\u2014"})


class ParseError(Exception):
    def __init__(self, message: str, location: Location) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


class NestingTooDeep(Exception):
    """Aborts the whole file: recovery inside a 20,000-deep structure is pointless."""


def describe(token: Token) -> str:
    if token.kind == "EOF":
        return "end of file"
    if token.kind == "WORD":
        return f"name '{token.value}'"
    if token.kind == "STRING":
        return "a string"
    if token.kind == "NUMBER":
        return f"number {token.value!r}"
    if token.kind in KEYWORDS:
        return f"keyword '{token.kind}'"
    return f"'{token.kind}'"


class ParseContext:
    """State shared by the parsers of one file and everything it includes."""

    def __init__(
        self,
        reporter: Reporter,
        include: Callable[
            [str, bool, Location, Parser, ComponentDescription, ComponentDescription], None
        ],
    ) -> None:
        self.reporter = reporter
        self.include = include
        self._anonymous = 0

    def anonymous_name(self) -> str:
        """SmartFrog names ``--`` attributes ``uniqueN``; ours count per resolution so the
        same descriptor always yields the same names (and the same descriptor hash)."""
        self._anonymous += 1
        return f"unique{self._anonymous}"


class Parser:
    """Parses one file's tokens into a description, reporting errors to the context."""

    def __init__(self, context: ParseContext, source: Source, tokens: list[Token]) -> None:
        self.context = context
        self.source = source
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------
    def loc(self, token: Token) -> Location:
        return Location(self.source, token.offset)

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "EOF":
            self.pos += 1
        return token

    def fail(self, message: str, token: Token | None = None) -> NoReturn:
        raise ParseError(message, self.loc(token or self.peek()))

    def expect(self, kind: str, what: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            self.fail(f"expected {what}, found {describe(token)}")
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.context.reporter.error(
                f"nesting deeper than {MAX_NESTING} levels; is this file generated wrongly?",
                self.loc(self.peek()),
            )
            raise NestingTooDeep

    # -- attribute lists ------------------------------------------------------------------
    def parse_file(self, store: ComponentDescription, owner: ComponentDescription) -> None:
        """Parse a whole file as an attribute list into ``store``."""
        self.parse_attributes(store, owner, "EOF", None)

    def parse_attributes(
        self,
        store: ComponentDescription,
        owner: ComponentDescription,
        closing: str,
        opened: Token | None,
    ) -> None:
        """Parse attributes until ``closing``; children are parented to ``owner``."""
        reporter = self.context.reporter
        seen: dict[str, Location] = {}
        while True:
            token = self.peek()
            kind = token.kind
            if kind == closing:
                return
            if kind == ";":
                self.pos += 1
                continue
            if kind == "EOF":
                assert opened is not None
                reporter.error(
                    "missing '}' before end of file",
                    self.loc(token),
                    (("the '{' it closes is here", self.loc(opened)),),
                )
                return
            depth = self.depth
            try:
                if kind in _DIRECTIVES:
                    self.parse_directive(store, owner)
                elif kind == "}":
                    self.fail("unexpected '}' (no '{' to close)")
                else:
                    self.parse_attribute(store, owner, seen)
            except ParseError as exc:
                reporter.error(exc.message, exc.location)
                self.depth = depth
                self.recover(closing)

    def recover(self, closing: str) -> None:
        """Skip to the end of the broken attribute: the next ``;`` or this level's ``}``."""
        depth = 0
        while True:
            kind = self.peek().kind
            if kind == "EOF":
                return
            if kind == "{":
                depth += 1
            elif kind == "}":
                if depth == 0:
                    if closing == "EOF":
                        self.pos += 1  # a stray '}' at top level: drop it
                    return
                depth -= 1
                if depth == 0:  # skipped a whole broken body
                    self.pos += 1
                    return
            elif kind == ";" and depth == 0:
                self.pos += 1
                return
            self.pos += 1

    def parse_directive(self, store: ComponentDescription, owner: ComponentDescription) -> None:
        token = self.advance()
        if token.kind == "#codebase":
            self.expect("STRING", "a string after #codebase")
            self.context.reporter.warning(
                "#codebase names Java jar locations; sdmesh ignores it", self.loc(token)
            )
            if self.peek().kind not in ("#include", "#include?"):
                return
            token = self.advance()
        name = self.expect("STRING", f"a quoted file name after {token.kind}")
        assert isinstance(name.value, str)
        self.context.include(
            name.value, token.kind == "#include?", self.loc(token), self, store, owner
        )

    def parse_attribute(
        self,
        store: ComponentDescription,
        owner: ComponentDescription,
        seen: dict[str, Location],
    ) -> None:
        tags: frozenset[str] = frozenset()
        if self.peek().kind == "[":
            tags = self.parse_tags()
        token = self.peek()
        location = self.loc(token)
        placement: tuple[str, ...] = ()
        if token.kind == "--":
            self.pos += 1
            name = self.context.anonymous_name()
        elif token.kind in _ANONYMOUS_COMPAT and self.tokens[self.pos + 1].kind == "extends":
            self.pos += 1
            self.context.reporter.warning(
                f"'{token.kind}' read as the anonymous name '--' (typesetting turns '--' "
                "into a dash); write '--'",
                location,
            )
            name = self.context.anonymous_name()
        elif token.kind == "WORD":
            self.pos += 1
            names = [str(token.value)]
            while self.peek().kind == ":":
                self.pos += 1
                part = self.peek()
                if part.kind != "WORD":
                    self.fail(f"expected a name after ':' in a placement, found {describe(part)}")
                self.pos += 1
                names.append(str(part.value))
            name = names[-1]
            placement = tuple(names[:-1])
        elif token.kind == "STRING":
            self.pos += 1
            name = str(token.value)
        elif token.kind in KEYWORDS:
            self.fail(f"'{token.kind}' is a reserved word and cannot name an attribute")
        else:
            self.fail(f"expected an attribute name, found {describe(token)}")

        value = self.parse_attribute_value(owner, location)
        attr = Attr(value, tags, location)
        if placement:
            store.placements.append(Placement(placement, name, attr))
            return
        previous = seen.get(name)
        if previous is not None:
            self.context.reporter.warning(
                f"attribute '{name}' is defined twice here; the later value wins",
                location,
                (("first defined here", previous),),
            )
        seen[name] = location
        store.attrs[name] = attr

    def parse_tags(self) -> frozenset[str]:
        self.advance()  # '['
        tags: list[str] = []
        while True:
            token = self.peek()
            if token.kind == "]":
                self.pos += 1
                return frozenset(tags)
            if token.kind == "," and tags:
                self.pos += 1
                continue
            if token.kind != "WORD":
                self.fail(f"expected a tag name or ']', found {describe(token)}")
            self.pos += 1
            tags.append(str(token.value))

    def parse_attribute_value(self, owner: ComponentDescription, name_loc: Location) -> object:
        kind = self.peek().kind
        if kind == "extends":
            return self.parse_component(owner, name_loc)
        if kind == ";":
            self.pos += 1
            return NULL
        value = self.parse_simple_value(owner)
        if self.peek().kind == ";":
            self.pos += 1
        return value

    # -- components -------------------------------------------------------------------------
    def parse_component(
        self, parent: ComponentDescription, name_loc: Location
    ) -> ComponentDescription:
        self.advance()  # 'extends'
        eager = True
        if self.peek().kind in ("DATA", "LAZY"):
            self.pos += 1
            eager = False
        cd = ComponentDescription(name_loc, parent, eager)
        prototypes: list[object] = []
        names: list[str] = []
        if self.peek().kind == ";":  # 'x extends;' — the 2006 grammar's empty description
            self.pos += 1
            cd.prototypes = None
            return cd
        last_was_body = False
        while True:
            token = self.peek()
            if token.kind == "NULL":
                self.pos += 1
                last_was_body = False
            elif token.kind == "{":
                prototypes.append(self.parse_body(cd))
                last_was_body = True
            elif token.kind in _REFERENCE_START:
                reference = self.parse_link_reference()
                prototypes.append(reference)
                names.append(reference.path())
                last_was_body = False
            else:
                self.fail(
                    f"expected a prototype name, '{{' or NULL after 'extends', found "
                    f"{describe(token)}"
                )
            if self.peek().kind == ",":
                self.pos += 1
                continue
            if not last_was_body and self.peek().kind == "{":
                prototypes.append(self.parse_body(cd))
            break
        if self.peek().kind == ";":
            self.pos += 1
        cd.extends = tuple(names)
        if len(prototypes) == 1 and type(prototypes[0]) is ComponentDescription:
            body = prototypes[0]
            cd.attrs = body.attrs
            cd.placements = body.placements
            cd.prototypes = None
        elif prototypes:
            cd.prototypes = prototypes
        return cd

    def parse_body(self, owner: ComponentDescription) -> ComponentDescription:
        """Parse ``{ ... }`` into a holder whose children are already parented to ``owner``."""
        opened = self.advance()  # '{'
        self.enter()
        holder = ComponentDescription(self.loc(opened), owner.parent, owner.eager)
        self.parse_attributes(holder, owner, "}", opened)
        if self.peek().kind == "}":
            self.pos += 1
        self.depth -= 1
        return holder

    # -- simple values ----------------------------------------------------------------------
    def parse_simple_value(self, owner: ComponentDescription) -> object:
        token = self.peek()
        kind = token.kind
        if kind in _LITERALS:
            self.pos += 1
            return token.value
        if kind == "true":
            self.pos += 1
            return True
        if kind == "false":
            self.pos += 1
            return False
        if kind == "NULL":
            self.pos += 1
            return NULL
        if kind == "TBD":
            self.pos += 1
            return TBD(self.loc(token))
        if kind == "[|":
            return self.parse_primitive_vector()
        if kind == "[":
            return self.parse_vector(owner)
        if kind == "(":
            return self.parse_parenthesised(owner)
        if kind == "IF":
            return self.parse_if(owner)
        if kind == "LAZY":
            self.pos += 1
            return self.parse_base_reference(owner, lazy=True, start=token)
        if kind == "DATA":
            self.pos += 1
            reference = self.parse_link_reference()
            return Reference(reference.parts, self.loc(token), data=True)
        if kind in _REFERENCE_START or kind in ("OPTIONAL", "APPLY", "ASSERT"):
            return self.parse_base_reference(owner, lazy=False, start=token)
        if kind == "extends":
            self.fail("a component description cannot appear here (only as an attribute value)")
        self.fail(f"expected a value, found {describe(token)}")

    def parse_base_reference(self, owner: ComponentDescription, lazy: bool, start: Token) -> object:
        token = self.peek()
        if token.kind in ("APPLY", "ASSERT"):
            self.pos += 1
            if self.peek().kind != "{":
                self.fail(f"expected '{{' after {token.kind}")
            args = ComponentDescription(self.loc(token), owner)
            body = self.parse_body(args)
            args.attrs = body.attrs
            args.placements = body.placements
            function = "ASSERT" if token.kind == "ASSERT" else "APPLY"
            return Apply(function, args, self.loc(token), lazy)
        optional = False
        default: object = None
        has_default = False
        if token.kind == "OPTIONAL":
            self.pos += 1
            optional = True
            if self.peek().kind == "(":
                self.pos += 1
                default = self.parse_simple_value(owner)
                has_default = True
                self.expect(")", "')' after the OPTIONAL default")
        reference = self.parse_link_reference()
        if has_default:
            return Reference(reference.parts, self.loc(start), lazy, False, optional, default)
        return Reference(reference.parts, self.loc(start), lazy, False, optional)

    def parse_link_reference(self) -> Reference:
        start = self.peek()
        parts: list[Part] = []
        first = True
        while True:
            token = self.peek()
            kind = token.kind
            if kind == "WORD":
                self.pos += 1
                parts.append(Part("ATTRIB" if first else "HERE", str(token.value), True))
            elif kind in _BARE_PARTS:
                self.pos += 1
                parts.append(Part(kind))
            elif kind in _NAMED_PARTS:
                self.pos += 1
                name = self.peek()
                if name.kind not in ("WORD", "STRING"):
                    self.fail(f"expected a name after {kind}, found {describe(name)}")
                self.pos += 1
                parts.append(Part(kind, str(name.value)))
            else:
                self.fail(f"expected a reference, found {describe(token)}")
            if self.peek().kind != ":":
                break
            self.pos += 1
            first = False
        return Reference(tuple(parts), self.loc(start))

    def parse_primitive_vector(self) -> list[object]:
        opened = self.advance()  # '[|'
        self.enter()
        items: list[object] = []
        while self.peek().kind != "|]":
            if items:
                self.expect(",", "',' or '|]' in a [| |] vector")
            token = self.peek()
            if token.kind in _LITERALS:
                self.pos += 1
                items.append(token.value)
            elif token.kind in ("true", "false"):
                self.pos += 1
                items.append(token.kind == "true")
            elif token.kind == "NULL":
                self.pos += 1
                items.append(NULL)
            elif token.kind == "[|":
                items.append(self.parse_primitive_vector())
            elif token.kind == "EOF":
                self.fail("missing '|]' to close the vector opened here", opened)
            else:
                self.fail(
                    f"[| |] vectors hold only literals, found {describe(token)}; "
                    "use [ ] for references"
                )
        self.pos += 1
        self.depth -= 1
        return items

    def parse_vector(self, owner: ComponentDescription) -> list[object]:
        opened = self.advance()  # '['
        self.enter()
        items: list[object] = []
        while self.peek().kind != "]":
            if self.peek().kind == "EOF":
                self.fail("missing ']' to close the vector opened here", opened)
            if items:
                self.expect(",", "',' or ']' in a vector")
            items.append(self.parse_simple_value(owner))
        self.pos += 1
        self.depth -= 1
        return items

    def parse_parenthesised(self, owner: ComponentDescription) -> object:
        opened = self.advance()  # '('
        self.enter()
        location = self.loc(opened)
        args = ComponentDescription(location, owner)
        if self.peek().kind == "!":
            self.pos += 1
            args.attrs["data"] = Attr(self.parse_simple_value(args), frozenset(), location)
            self.expect(")", "')' to close the '!' expression")
            self.depth -= 1
            return Apply("!", args, location)
        first = self.parse_simple_value(args)
        if self.peek().kind == ")":  # plain grouping: (x)
            self.pos += 1
            self.depth -= 1
            return first
        op_token = self.peek()
        op = op_token.kind
        if op not in _OPERATORS:
            self.fail(f"expected an operator or ')', found {describe(op_token)}")
        self.pos += 1
        operands = [first, self.parse_simple_value(args)]
        if op in NARY_OPERATORS:
            while self.peek().kind == op:
                self.pos += 1
                operands.append(self.parse_simple_value(args))
        following = self.peek()
        if following.kind in _OPERATORS:
            self.fail(
                f"operators have no precedence in SmartFrog: '{op}' and '{following.kind}' "
                "need their own parentheses, e.g. ((a + b) * c)",
                following,
            )
        self.expect(")", f"')' to close the '{op}' expression")
        self.depth -= 1
        empty: frozenset[str] = frozenset()
        if op in NARY_OPERATORS:
            for operand in operands:
                args.attrs[self.context.anonymous_name()] = Attr(operand, empty, location)
        else:
            args.attrs["left"] = Attr(operands[0], empty, location)
            args.attrs["right"] = Attr(operands[1], empty, location)
        return Apply(op, args, self.loc(op_token))

    def parse_if(self, owner: ComponentDescription) -> Apply:
        token = self.advance()  # 'IF'
        self.enter()
        location = self.loc(token)
        args = ComponentDescription(location, owner)
        empty: frozenset[str] = frozenset()
        args.attrs["if"] = Attr(self.parse_simple_value(args), empty, location)
        self.expect("THEN", "THEN after the IF condition")
        args.attrs["then"] = Attr(self.parse_simple_value(args), empty, location)
        if self.peek().kind == "ELSE":
            self.pos += 1
            args.attrs["else"] = Attr(self.parse_simple_value(args), empty, location)
        else:
            args.attrs["else"] = Attr(NULL, empty, location)
        self.expect("FI", "FI to close the IF")
        self.depth -= 1
        return Apply("ifThenElse", args, location)
