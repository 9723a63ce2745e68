"""No import cycles inside sdmesh: every ``import`` counts (top level, under TYPE_CHECKING,
inside functions), because a cycle hidden in a function is still two modules that cannot be
understood, tested or split apart alone.

The modules' source is read with ``ast``, nothing is imported. Two cycles predate this test
and are owned elsewhere (the language's values/render/lexer, the lifecycle's engine and its
model); they are listed in ``KNOWN`` so that the test fails on any new cycle, and also when
a known one is gone (then remove it from the list).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import sdmesh

ROOT = Path(sdmesh.__file__).resolve().parent

#: Cycles that exist today, each a set of modules (see the module docstring).
KNOWN = [
    frozenset({"sdmesh.language.lexer", "sdmesh.language.render", "sdmesh.language.values"}),
    frozenset(
        {
            "sdmesh.lifecycle.behaviours",
            "sdmesh.lifecycle.engine",
            "sdmesh.lifecycle.model",
            "sdmesh.lifecycle.runtime",
        }
    ),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The sdmesh modules ``name`` imports. A package importing its own submodule, or a
    module importing its enclosing package, is not an edge (re-exports in __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            related = name.startswith(target + ".") or target.startswith(name + ".")
            if target and target != name and not related:
                yield target


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def test_there_is_no_new_import_cycle() -> None:
    known = modules()
    graph = {name: set(imported(name, path, known)) for name, path in known.items()}
    found = cycles(graph)
    new = [sorted(c) for c in found if c not in KNOWN]
    assert new == [], f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN if c not in found]
    assert gone == [], f"these cycles are gone: remove them from KNOWN: {gone}"


def test_the_agent_and_its_api_are_not_a_cycle() -> None:
    """The cycle issue 14 named: the agent imports the API; nothing below imports it back."""
    known = modules()
    for name in ("api", "api_observe", "api_access", "dashboard", "metrics", "api_context"):
        module = f"sdmesh.agent.{name}"
        assert "sdmesh.agent.agent" not in set(imported(module, known[module], known)), module


def test_the_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
