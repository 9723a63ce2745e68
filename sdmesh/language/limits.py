"""Hard bounds on what one resolution may compute (issue 11, item 5).

The component budget (``resolver.MAX_COMPONENTS``) bounds copies of descriptions, but values
grow too: each line of ``s2 (s1 ++ s1)`` doubles a string (1.3 KB reached 1.7 GB), a vector
of nine references to a vector of nine references is 9**levels items once printed, and
``a * a`` squares an integer's digits. :class:`Work` is the one meter a resolution carries:

- every value is measured when it is linked, by its *expanded* size (characters of strings,
  items of vectors, counted as often as they would be printed: a vector shared nine times
  counts nine times) and its nesting depth; measures are memoised, so the meter is linear;
- every step (an attribute linked, a reference part followed, a function applied) and every
  cell a function or a vector creates is charged to a total;
- after linking, the whole tree is measured once more (what the canonical text would hold).

Exceeding a bound raises :class:`LimitExceeded`, which ends the resolution with one located
error naming the bound. The defaults are far above real pools (a 1,000-VM pool uses a few
per cent of each) and low enough that a descriptor of a few kilobytes cannot take more than
some tens of megabytes or some seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdmesh.language.values import Apply, ComponentDescription, Reference

if TYPE_CHECKING:
    from sdmesh.language.source import Location


@dataclass(frozen=True)
class Limits:
    """The bounds of one resolution; the defaults suit every real descriptor."""

    #: Longest string a value may be (characters).
    max_string: int = 1024 * 1024
    #: Most items a vector may expand to (nested vectors counted item by item).
    max_vector: int = 100_000
    #: Largest expanded size of one value (string characters plus vector items).
    max_value: int = 4 * 1024 * 1024
    #: Deepest nesting of vectors in one value, and of descriptions in the tree.
    max_depth: int = 200
    #: Most steps of work (links, reference parts, function calls) in one resolution.
    max_steps: int = 5_000_000
    #: Most cells (characters and items) functions and vectors may create in total.
    max_created: int = 32 * 1024 * 1024
    #: Largest expanded size of the resolved tree's values together (what it prints to).
    max_total: int = 32 * 1024 * 1024
    #: Widest integer, in bits (SmartFrog's Long is 64 bits; a little slack for sums).
    max_int_bits: int = 64


DEFAULT_LIMITS = Limits()


class LimitExceeded(Exception):
    """Unwinds a resolution that passed a bound; located where it happened, if known."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


class Work:
    """The meter of one resolution: steps, created cells and value measures (memoised)."""

    __slots__ = ("_measured", "created", "limits", "steps")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.steps = 0
        self.created = 0
        # id -> (the list itself, kept alive so its id is not reused; size; depth)
        self._measured: dict[int, tuple[list[object], int, int]] = {}

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(
                f"resolution takes more than {self.limits.max_steps:,} steps (max_steps): "
                "references fan out too widely"
            )

    def create(self, value: object) -> None:
        """Charge a value a function or a vector link just made, and check it."""
        size, _ = self.check(value)
        self.created += size
        if self.created > self.limits.max_created:
            raise LimitExceeded(
                f"resolution creates more than {self.limits.max_created:,} characters and "
                "vector items in all (max_created)"
            )

    def check_arguments(self, values: list[object]) -> None:
        """Before a function runs: its arguments together may not pass ``max_value`` (a
        concatenation is about as large as its arguments)."""
        self.step()
        total = 0
        for value in values:
            total += self.measure(value)[0]
        if total > self.limits.max_value:
            raise LimitExceeded(
                f"a function's arguments hold {total:,} characters and items: values are "
                f"limited to {self.limits.max_value:,} (max_value)"
            )

    def check(self, value: object) -> tuple[int, int]:
        """The value's expanded size and depth; LimitExceeded past a bound."""
        size, depth = self.measure(value)
        limits = self.limits
        if type(value) is str and size > limits.max_string:
            raise LimitExceeded(
                f"a string of {size:,} characters: strings are limited to "
                f"{limits.max_string:,} (max_string)"
            )
        if size > limits.max_value:
            raise LimitExceeded(
                f"a value of {size:,} characters and items once expanded: values are limited "
                f"to {limits.max_value:,} (max_value)"
            )
        return size, depth

    def measure(self, value: object) -> tuple[int, int]:
        t = type(value)
        if t is str:
            assert isinstance(value, str)
            return len(value), 0
        if t is not list:
            if isinstance(value, int):
                self.check_int(value)
            return 1, 0
        assert isinstance(value, list)
        known = self._measured.get(id(value))
        if known is not None:
            return known[1], known[2]
        items = 0
        size = 1
        depth = 0
        for item in value:
            item_size, item_depth = self.measure(item)
            size += item_size
            items += item_size if type(item) is list else 1
            depth = max(depth, item_depth + 1)
        limits = self.limits
        if items > limits.max_vector:
            raise LimitExceeded(
                f"a vector of {items:,} items once expanded: vectors are limited to "
                f"{limits.max_vector:,} (max_vector)"
            )
        if depth > limits.max_depth:
            raise LimitExceeded(
                f"vectors nested {depth} deep: nesting is limited to {limits.max_depth} (max_depth)"
            )
        self._measured[id(value)] = (value, size, depth)
        return size, depth

    def check_int(self, value: int) -> None:
        if value.bit_length() > self.limits.max_int_bits:
            raise LimitExceeded(
                f"an integer of {value.bit_length()} bits: integers are limited to "
                f"{self.limits.max_int_bits} bits (max_int_bits)"
            )

    def check_tree(self, root: ComponentDescription) -> None:
        """Measure the resolved tree as a whole: its values' total expanded size and the
        depth of its descriptions (a copy of a large value costs again, as it prints)."""
        limits = self.limits
        total = 0
        stack: list[tuple[ComponentDescription, int]] = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > limits.max_depth:
                raise LimitExceeded(
                    f"descriptions nested {depth} deep: nesting is limited to "
                    f"{limits.max_depth} (max_depth)",
                    node.location,
                )
            for attr in node.attrs.values():
                total += 1
                value = attr.value
                if type(value) is ComponentDescription:
                    assert isinstance(value, ComponentDescription)
                    stack.append((value, depth + 1))
                    continue
                if type(value) is Apply:
                    assert isinstance(value, Apply)
                    stack.append((value.args, depth + 1))
                    continue
                size, _ = self.measure(value) if type(value) is not Reference else (1, 0)
                total += size
                if total > limits.max_total:
                    raise LimitExceeded(
                        f"the resolved tree holds more than {limits.max_total:,} characters "
                        "and vector items (max_total): large values are copied or linked "
                        "too many times",
                        attr.location,
                    )
