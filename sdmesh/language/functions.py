"""Operators and SmartFrog's templated functions, evaluated at link time (or run time if LAZY).

Operators desugar into function applications (shared/spec/sf-language.md §5): n-ary ones take
anonymous parameters in order, binary ones ``left``/``right``, ``!`` takes ``data``. Template
functions (``x extends concat { -- "a"; -- b; }``) name their implementation with
``sfFunctionClass``; the Java class names of SmartFrog's library map to the same functions, so
canonical ``APPLY { sfFunctionClass "..."; }`` forms keep working.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable
from typing import Final

from sdmesh.language.limits import DEFAULT_LIMITS
from sdmesh.language.values import NULL, ComponentDescription, Float32, Long, Reference


class FunctionError(Exception):
    """A function could not be applied to its arguments (reported at the call site)."""


Args = list[tuple[str, object]]
Function = Callable[[Args], object]

#: Attributes of a function description that configure it rather than being arguments.
CONTROL_ATTRIBUTES: Final = frozenset(
    {"phase.function", "sfFunctionClass", "sfFunctionLazy", "sfFunctionData", "sfTemp"}
)


def type_name(value: object) -> str:
    """SmartFrog's name for a value's type, for messages."""
    if value is NULL:
        return "NULL"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, Long):
        return "Long"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, Float32):
        return "Float"
    if isinstance(value, float):
        return "Double"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Vector"
    if isinstance(value, ComponentDescription):
        return "ComponentDescription"
    if isinstance(value, Reference):
        return "Reference"
    if isinstance(value, bytes):
        return "byte array"
    return type(value).__name__


def to_text(value: object) -> str:
    """Java's ``toString`` for our values, as ``++`` and ``concat`` use it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(float(value))
        return text.replace("e", "E").replace("inf", "Infinity")
    if isinstance(value, list):
        return "[" + ", ".join(to_text(item) for item in value) + "]"
    if value is NULL:
        return "SFNull"
    if isinstance(value, Reference):
        return value.canonical()
    return str(value)


def _numbers(args: Args, op: str) -> list[int | float]:
    numbers: list[int | float] = []
    for name, value in args:
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = f'"{value}"' if isinstance(value, str) else to_text(value)
            raise FunctionError(
                f"'{op}' needs numbers, but {_arg_label(name)} is {type_name(value)} {shown}"
            )
        numbers.append(value)
    return numbers


def _arg_label(name: str) -> str:
    return "an operand" if name.startswith("unique") else f"'{name}'"


def _numeric_result(values: list[int | float], result: int | float) -> object:
    """Keep SmartFrog's number types: Integer op Integer stays Integer, any Double wins."""
    if any(isinstance(v, float) and not isinstance(v, Float32) for v in values):
        return float(result)
    if any(isinstance(v, Float32) for v in values):
        return Float32(result)
    if any(isinstance(v, Long) for v in values):
        return Long(int(result))
    return int(result)


def _sum(args: Args) -> object:
    values = _numbers(args, "+")
    return _numeric_result(values, sum(values))


def _product(args: Args) -> object:
    values = _numbers(args, "*")
    result: int | float = 1
    for value in values:
        result *= value
    return _numeric_result(values, result)


def _binary(args: Args) -> tuple[object, object]:
    named = dict(args)
    if "left" not in named or "right" not in named:
        raise FunctionError("needs 'left' and 'right' arguments")
    return named["left"], named["right"]


def _minus(args: Args) -> object:
    values = _numbers([(n, v) for n, v in args if n in ("left", "right")], "-")
    if len(values) != 2:
        raise FunctionError("'-' needs 'left' and 'right' arguments")
    return _numeric_result(values, values[0] - values[1])


def _divide(args: Args) -> object:
    values = _numbers([(n, v) for n, v in args if n in ("left", "right")], "/")
    if len(values) != 2:
        raise FunctionError("'/' needs 'left' and 'right' arguments")
    if values[1] == 0:
        raise FunctionError("division by zero")
    if all(isinstance(v, int) for v in values):
        quotient = abs(int(values[0])) // abs(int(values[1]))  # Java truncates toward zero
        sign = -1 if (values[0] < 0) != (values[1] < 0) else 1
        return _numeric_result(values, sign * quotient)
    return _numeric_result(values, values[0] / values[1])


def _mod(args: Args) -> object:
    values = _numbers([(n, v) for n, v in args if n in ("left", "right")], "%")
    if len(values) != 2:
        raise FunctionError("'%' needs 'left' and 'right' arguments")
    if values[1] == 0:
        raise FunctionError("modulo by zero")
    import math

    return _numeric_result(values, math.fmod(values[0], values[1]))


def _concat(args: Args) -> object:
    return "".join(to_text(value) for _, value in args)


def _vector(args: Args) -> object:
    return [value for _, value in args]


def _append(args: Args) -> object:
    result: list[object] = []
    for name, value in args:
        if not isinstance(value, list):
            raise FunctionError(f"'<>' joins vectors, but {_arg_label(name)} is {type_name(value)}")
        result.extend(value)
    return result


def _compare(op: str) -> Function:
    def compare(args: Args) -> object:
        left, right = _binary(args)
        if op in ("==", "!="):
            equal = _equal(left, right)
            return equal if op == "==" else not equal
        both_numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right)
        )
        if not both_numbers and not (isinstance(left, str) and isinstance(right, str)):
            raise FunctionError(
                f"'{op}' compares two numbers or two strings, not {type_name(left)} and "
                f"{type_name(right)}"
            )
        a, b = left, right
        assert isinstance(a, int | float | str) and isinstance(b, int | float | str)
        if op == ">":
            return a > b  # type: ignore[operator]
        if op == ">=":
            return a >= b  # type: ignore[operator]
        if op == "<":
            return a < b  # type: ignore[operator]
        return a <= b  # type: ignore[operator]

    return compare


def _equal(left: object, right: object) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return left == right


def _booleans(args: Args, op: str) -> list[bool]:
    values: list[bool] = []
    for name, value in args:
        if not isinstance(value, bool):
            raise FunctionError(
                f"'{op}' needs Booleans, but {_arg_label(name)} is {type_name(value)}"
            )
        values.append(value)
    return values


def _and(args: Args) -> object:
    return all(_booleans(args, "&&"))


def _or(args: Args) -> object:
    return any(_booleans(args, "||"))


def _not(args: Args) -> object:
    values = _booleans([(n, v) for n, v in args if n == "data"], "!")
    if len(values) != 1:
        raise FunctionError("'!' needs one argument")
    return not values[0]


def _implies(args: Args) -> object:
    left, right = _booleans(list(args)[:2], "->")
    return (not left) or right


def _if_then_else(args: Args) -> object:
    named = dict(args)
    condition = named.get("if")
    if not isinstance(condition, bool):
        raise FunctionError(f"IF needs a Boolean condition, not {type_name(condition)}")
    return named.get("then", NULL) if condition else named.get("else", NULL)


_FORMAT_SLOT = re.compile(r"\$(\d+)")


def _format_string(args: Args) -> object:
    named = dict(args)
    template = named.get("format")
    if not isinstance(template, str):
        raise FunctionError("formatString needs a 'format' string")

    written = [len(template)]

    def slot(match: re.Match[str]) -> str:
        key = f"s{match.group(1)}"
        if key not in named:
            raise FunctionError(f"formatString: no attribute '{key}' for ${match.group(1)}")
        text = to_text(named[key])
        written[0] += len(text)  # a slot repeated many times multiplies its value
        if written[0] > DEFAULT_LIMITS.max_string:
            raise FunctionError(
                f"formatString makes a string over {DEFAULT_LIMITS.max_string:,} characters "
                "(max_string)"
            )
        return text

    return _FORMAT_SLOT.sub(slot, template)


def _date(args: Args) -> object:
    """The time of resolution, printed as Java's ``Date.toString`` prints it."""
    return datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def _random(args: Args) -> object:
    """``random``: an Integer in [min, max] (``integer true``) or a Double in [min, max)."""
    named = dict(args)
    low, high = named.get("min", 0), named.get("max", 10)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        raise FunctionError("random needs Integer 'min' and 'max'")
    assert isinstance(low, int) and isinstance(high, int)
    if high < low:
        raise FunctionError(f"random: max {high} is below min {low}")
    seed = named.get("seed")
    generator = random.Random(seed if isinstance(seed, int) else None)
    if named.get("integer") is True:
        return generator.randint(low, high)
    return low + generator.random() * (high - low)


def _user_input(args: Args) -> object:
    """``userinput``: sdmesh never reads a terminal while resolving; the default is used."""
    named = dict(args)
    default = named.get("default")
    if not isinstance(default, str):
        raise FunctionError(
            "userinput needs a 'default' string: descriptors are resolved without a terminal"
        )
    return default


def make_next() -> Function:
    """``next``: successive Integers, starting above ``base``. Its counter lives as long as
    one resolution (SmartFrog's lives as long as the function class)."""
    last = [0]

    def next_value(args: Args) -> object:
        base = dict(args).get("base", 0)
        if isinstance(base, bool) or not isinstance(base, int):
            raise FunctionError(f"next needs an Integer 'base', not {type_name(base)}")
        last[0] = base if base > last[0] else last[0] + 1
        return last[0]

    return next_value


def _assert(args: Args) -> object:
    for name, value in args:
        if value is not True:
            raise FunctionError(f"assertion '{name}' failed (it is {to_text(value)})")
    return True


FUNCTIONS: Final[dict[str, Function]] = {
    "Sum": _sum,
    "Product": _product,
    "Minus": _minus,
    "Divide": _divide,
    "Mod": _mod,
    "Concatenate": _concat,
    "Vector": _vector,
    "Append": _append,
    "Equals": _compare("=="),
    "NotEquals": _compare("!="),
    "GreaterThan": _compare(">"),
    "GreaterEquals": _compare(">="),
    "LessThan": _compare("<"),
    "LessEquals": _compare("<="),
    "And": _and,
    "Or": _or,
    "Not": _not,
    "Implies": _implies,
    "IfThenElse": _if_then_else,
    "FormatString": _format_string,
    "Format": _format_string,  # SmartFrog's class name for formatString
    "Date": _date,
    "Random": _random,
    "UserInput": _user_input,
    "ASSERT": _assert,
    # SmartFrog's short comparison names (GE, LE, ...) take 'left' and 'right' too.
    "GE": _compare(">="),
    "LE": _compare("<="),
    "GT": _compare(">"),
    "LT": _compare("<"),
    "EQ": _compare("=="),
    "NE": _compare("!="),
}

#: Functions whose implementation keeps state for one resolution, or needs the resolver
#: (``Ref`` resolves a reference written as a string).
PER_RESOLUTION: Final = frozenset({"Next", "Ref"})

OPERATORS: Final[dict[str, str]] = {
    "+": "Sum",
    "*": "Product",
    "-": "Minus",
    "/": "Divide",
    "%": "Mod",
    "++": "Concatenate",
    "<>": "Append",
    "==": "Equals",
    "!=": "NotEquals",
    ">": "GreaterThan",
    ">=": "GreaterEquals",
    "<": "LessThan",
    "<=": "LessEquals",
    "&&": "And",
    "||": "Or",
    "!": "Not",
    "->": "Implies",
    "ifThenElse": "IfThenElse",
    "ASSERT": "ASSERT",
}


def canonical_name(name: str) -> str:
    """The key of a function given by operator, simple name or Java class name."""
    key = OPERATORS.get(name, name)
    return key.rsplit(".", 1)[1] if key not in FUNCTIONS and "." in key else key


def lookup(name: str) -> Function | None:
    """Find a function by operator, simple name or SmartFrog Java class name."""
    key = OPERATORS.get(name, name)
    function = FUNCTIONS.get(key)
    if function is None and "." in key:
        function = FUNCTIONS.get(key.rsplit(".", 1)[1])
    return function
