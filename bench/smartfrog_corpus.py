"""Conformance bench: SmartFrog's own test expectations, run through sdmesh's resolver.

Usage: ``python bench/smartfrog_corpus.py PATH [--mode real|ours|both] [--show-failures N]``

``PATH`` is a checkout of SmartFrog's repository (``steveloughran/smartfrog``). The bench is
opt-in (CI has no network, so no checkout): it is not part of ``make test``.

What it does:

1. Finds the class-path roots of the checkout: every directory holding an ``org/`` tree of
   ``.sf`` files (``core/smartfrog/src``, the components' ``src`` and ``test`` directories...).
2. Derives expected outcomes from SmartFrog's Java tests: each call naming a ``.sf`` file
   (``deployExpectingSuccess``, ``expectSuccessfulTestRun``, ``deployExpectingException``...)
   says whether the file deploys, fails at run time (it must still resolve), or is rejected
   at parse, type, place, link, schema, TBD or cyclic resolution (from the exception names and
   texts the test expects).
3. Resolves each judged file exactly as ``sdmesh validate`` and ``sdmesh show --json`` do
   (:func:`sdmesh.language.resolve_file`, then the JSON rendering), in two modes: ``real``
   (SmartFrog's own library first on the include path) and ``ours`` (sdmesh's built-in
   library first, so SmartFrog's core names come from it; the rest from the checkout).
4. Prints agreement, the kind of error of each rejection, the attribute values SmartFrog's
   FunctionsSystemTest and ReferencePositiveTest assert, the slowest file and the total time.

Nothing here special-cases a file: expectations come from the Java sources, verdicts from the
resolver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sdmesh.language import DescriptorError, resolve_file
from sdmesh.language.library import library_dir

#: Expected outcomes. "deploys" and "runtime" must resolve; the others must be rejected.
RESOLVES = frozenset({"deploys", "runtime"})
#: Any of these satisfies an expectation of a generic "resolution" failure.
RESOLUTION_KINDS = frozenset({"type", "place", "function", "link", "schema", "tbd", "cyclic"})

SUCCESS_CALLS = frozenset(
    {
        "deployExpectingSuccess",
        "deployExpectingSuccessFile",
        "expectSuccessfulTestRun",
        "expectSuccessfulTestRunOrSkip",
        "runTestsToCompletion",
        "expectDeployed",
        "expectSuccessfulTermination",
    }
)
RUNTIME_CALLS = frozenset(
    {
        "expectAbnormalTestRun",
        "expectAbnormalTermination",
        "deployExpectingFault",
        "deployExpectingAssertionFailure",
        "expectTermination",
        "expectLivenessFailure",
    }
)
EXCEPTION_CALLS = frozenset({"deployExpectingException"})
ALL_CALLS = SUCCESS_CALLS | RUNTIME_CALLS | EXCEPTION_CALLS

_CALL = re.compile(r"\b(" + "|".join(sorted(ALL_CALLS)) + r")\s*\(")
_CONSTANT = re.compile(r"\bString\s+(\w+)\s*=\s*((?:\"(?:[^\"\\]|\\.)*\"\s*\+?\s*)+);")
_LITERAL = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")


@dataclass
class Expectation:
    """What SmartFrog's tests expect of one file."""

    relative: str
    outcome: str  # deploys | runtime | parse | type | place | link | schema | tbd | cyclic | ...
    test: str  # the Java file and method call that says so


@dataclass
class Verdict:
    ok: bool
    kind: str  # "ok" or the kind of our first error (in file order)
    message: str
    seconds: float
    tree: object = None
    #: The kinds of all our errors: SmartFrog stops at the first error it meets, sdmesh
    #: reports them all, so the one SmartFrog reports must be among them.
    kinds: tuple[str, ...] = ()


@dataclass
class ModeResult:
    name: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)


# ------------------------------------------------------------------------- expectations
def _arguments(text: str, start: int) -> list[str]:
    """The top-level arguments of the call whose '(' is at ``start - 1``."""
    depth, i, current, args = 1, start, [], []
    in_string = False
    while i < len(text) and depth:
        c = text[i]
        if in_string:
            current.append(c)
            if c == "\\":
                current.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            current.append(c)
        elif c in "([{":
            depth += 1
            current.append(c)
        elif c in ")]}":
            depth -= 1
            if depth:
                current.append(c)
        elif c == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    args.append("".join(current).strip())
    return args


def _evaluate(expression: str, constants: dict[str, str]) -> str | None:
    """A Java string expression made of literals and known constants, or None."""
    pieces = []
    for term in expression.split("+"):
        term = term.strip()
        literal = _LITERAL.fullmatch(term)
        if literal:
            pieces.append(literal.group(1))
        elif term in constants:
            pieces.append(constants[term])
        else:
            return None
    return "".join(pieces)


def classify_expected_failure(arguments: str) -> str:
    """The phase a ``deployExpectingException`` call expects, from names and texts."""
    text = arguments
    lowered = text.lower()
    # Thrown by a component's own code while deploying or starting (its sfResolve calls):
    # the descriptor resolved, the failure is at run time.
    if (
        "EXCEPTION_LIFECYCLE" in text
        or "SmartFrogLifecycleException" in text
        or "failed to deploy" in lowered
        or '"sfDeploy"' in text
        or '"sfStart"' in text
    ):
        return "runtime"
    if "TBD" in text:
        return "tbd"
    if "cyclic" in lowered:  # not "cycle": every EXCEPTION_LIFECYCLE contains it
        return "cyclic"
    if "parse" in lowered and "Exception" in text:
        return "parse"
    if "TYPERESOLUTION" in text or "TypeResolution" in text:
        return "type"
    if "PlaceResolution" in text or "PLACERESOLUTION" in text:
        return "place"
    if "AssertionResolution" in text or "error in schema" in lowered:
        return "schema"
    if "LINKRESOLUTION" in text or "LinkResolution" in text:
        return "link"
    if "CompileResolution" in text or re.search(r"\bEXCEPTION_RESOLUTION\b", text):
        return "resolution"
    if "SmartFrogResolutionException" in text:
        return "resolution"
    return "runtime"


_JAVA_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*.*?\*/', re.S)


def _strip_comments(java: str) -> str:
    """Java source without comments (tests commented out expect nothing), strings kept."""
    return _JAVA_TOKENS.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", java)


_METHOD = re.compile(r"\bvoid\s+(\w+)\s*\(")


def _runs_as_test(text: str, methods: list[tuple[int, str]], at: int) -> bool:
    """Whether the method holding ``at`` runs: JUnit 3 runs ``test*`` methods, JUnit 4
    ``@Test`` ones (``NotestX`` is SmartFrog's way of disabling one). Calls outside a void
    method (helpers returning values) count."""
    enclosing = [(start, name) for start, name in methods if start < at]
    if not enclosing:
        return True
    start, name = enclosing[-1]
    if name.startswith("test"):
        return True
    before = text[max(0, start - 200) : start]
    if "@Test" in before.rsplit("}", 1)[-1]:
        return True
    return not name.lower().startswith(("notest", "disabled", "xtest", "ignore"))


def derive_expectations(checkout: Path) -> dict[str, Expectation]:
    """Expected outcome per relative ``.sf`` name, from every Java test in the checkout."""
    found: dict[str, Expectation] = {}
    for java in sorted(checkout.rglob("*.java")):
        if "/test" not in str(java):
            continue
        try:
            text = java.read_text(errors="replace")
        except OSError:
            continue
        text = _strip_comments(text)
        if not _CALL.search(text):
            continue
        constants = {}
        for match in _CONSTANT.finditer(text):
            value = _evaluate(match.group(2).rstrip("+ "), constants)
            if value is not None:
                constants[match.group(1)] = value
        methods = [(m.start(), m.group(1)) for m in _METHOD.finditer(text)]
        for match in _CALL.finditer(text):
            call = match.group(1)
            if not _runs_as_test(text, methods, match.start()):
                continue
            args = _arguments(text, match.end())
            relative = _sf_name(args, constants)
            if relative is None:
                continue
            if call in SUCCESS_CALLS:
                outcome = "deploys"
            elif call in RUNTIME_CALLS:
                outcome = "runtime"
            else:
                outcome = classify_expected_failure(" ".join(args[1:]))
            line = text.count("\n", 0, match.start()) + 1
            where = f"{java.relative_to(checkout)}:{line} {call}"
            previous = found.get(relative)
            # A file several tests name: a rejection is more specific than a deployment.
            if previous is None or (previous.outcome in RESOLVES and outcome not in RESOLVES):
                found[relative] = Expectation(relative, outcome, where)
    return found


def _sf_name(args: list[str], constants: dict[str, str]) -> str | None:
    first = _evaluate(args[0], constants) if args else None
    if first is not None and first.endswith(".sf"):
        return first.lstrip("/")
    if len(args) >= 2 and first is not None:  # (package, filename) form
        second = _evaluate(args[1], constants)
        if second is None:
            return None
        package = first if "/" in first else first.replace(".", "/")
        name = second if second.endswith(".sf") else second + ".sf"
        return (package.rstrip("/") + "/" + name).lstrip("/")
    return None


# ---------------------------------------------------------------------------- the corpus
def generated_root(checkout: Path, into: Path) -> Path:
    """What SmartFrog's build generates: ``X.sf`` copied from each ``X.sf.build`` template
    (``org/smartfrog/version.sf``), ``@tokens@`` replaced by placeholders."""
    for template in checkout.rglob("*.sf.build"):
        parts = template.relative_to(checkout).parts
        if "org" not in parts:
            continue
        relative = Path(*parts[parts.index("org") :]).with_suffix("")
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = template.read_text(errors="replace")
        target.write_text(re.sub(r"@(\w+)@", r"\1", text))
    return into


def class_path_roots(checkout: Path) -> list[Path]:
    """Every directory that holds an ``org/`` tree of ``.sf`` files (a class-path root)."""
    roots: dict[Path, None] = {}
    for sf in sorted(checkout.rglob("*.sf")):
        parts = sf.relative_to(checkout).parts
        if "org" in parts:
            index = parts.index("org")
            roots[checkout.joinpath(*parts[:index])] = None
    core = checkout / "core" / "smartfrog" / "src"
    ordered = [core] if core in roots else []
    return ordered + [root for root in roots if root != core]


def test_properties(checkout: Path) -> dict[str, str]:
    """The system properties SmartFrog's test builds set (``<sysproperty key= value=>``)."""
    properties: dict[str, str] = {}
    pattern = re.compile(r'<sysproperty\s+key="([^"]+)"\s+(?:value|file|path|location)="([^"]*)"')
    ant_property = re.compile(r'<property\s+name="([^"]+)"\s+(?:value|location)="([^"]*)"')
    for build in sorted(checkout.rglob("*.xml")):
        if build.name not in ("build.xml", "common.xml") and "test" not in build.name:
            continue
        try:
            text = build.read_text(errors="replace")
        except OSError:
            continue
        for key, value in pattern.findall(text):
            properties.setdefault(key, re.sub(r"\$\{[^}]*\}", "/tmp/smartfrog-test", value))
        # <syspropertyset><propertyref prefix="test."/>: the builds pass every test.* property
        for key, value in ant_property.findall(text):
            if key.startswith("test."):
                properties.setdefault(key, re.sub(r"\$\{[^}]*\}", "/tmp/smartfrog-test", value))
    properties.setdefault("test.files.dir", str(checkout))
    properties.setdefault("org.smartfrog.sfcore.processcompound.sfProcessName", "rootProcess")
    return properties


_INCLUDE = re.compile(r'#include\s+(\?\s*)?"([^"]+)"')


def missing_include(path: Path, roots: list[Path]) -> str | None:
    """An include of ``path`` (or of what it includes) found nowhere in the checkout: such a
    file cannot load in SmartFrog either, so it is not judged."""
    seen: set[Path] = set()
    stack = [path]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            text = current.read_text(errors="replace")
        except OSError:
            continue
        for optional, name in _INCLUDE.findall(text):
            relative = name.removeprefix("file:").lstrip("/")
            found = current.parent / name if (current.parent / name).is_file() else None
            found = found or locate(relative, roots)
            if found is None:
                if not optional:
                    return name
                continue
            stack.append(found)
    return None


def locate(relative: str, roots: list[Path]) -> Path | None:
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------ verdicts
def classify_error(message: str) -> str:
    """The phase one of our error messages belongs to."""
    text = message.lower()
    if " needs attribute " in text:  # a schema's verdict, whatever the value's trouble
        return "schema"
    if "tbd" in text:
        return "tbd"
    if "cyclic" in text or "include cycle" in text or "contains it" in text:
        return "cyclic"
    if "cannot extend" in text or "extends chain" in text:
        return "type"
    if "cannot place" in text:
        return "place"
    if text.startswith(("sfconfig must be", "sfconfig is a function", "no sfconfig")):
        return "sfConfig"
    if (
        "needs attribute" in text
        or "schema" in text
        or "assertion" in text
        or "choose one of" in text
        or "the minimum is" in text
        or "the maximum is" in text
        or re.search(r"' of .* must be ", text)
    ):
        return "schema"
    if "include" in text and "not found" in text:
        return "parse"
    if (
        "cannot resolve" in text
        or "no attribute" in text
        or "refers to" in text
        or "not a component" in text
        or "property" in text
        or "environment variable" in text
        or "live daemons" in text
    ):
        return "link"
    if "function" in text or "needs" in text or "compares" in text:
        return "function"
    return "parse"


def run_one(path: Path, include_dirs: list[Path], properties: dict[str, str]) -> Verdict:
    start = time.perf_counter()
    try:
        resolved = resolve_file(path, include_dirs, properties)
        tree = resolved.to_json()
        json.dumps(tree)  # what `show --json` prints
    except DescriptorError as error:
        errors = [d for d in error.diagnostics if d.severity == "error"]
        message = errors[0].message if errors else str(error)
        kinds = tuple(dict.fromkeys(classify_error(d.message) for d in errors))
        seconds = time.perf_counter() - start
        return Verdict(False, classify_error(message), message, seconds, None, kinds)
    except Exception as error:  # a crash is a finding, not a bench failure
        message = f"CRASH {type(error).__name__}: {error}"
        return Verdict(False, "crash", message, time.perf_counter() - start)
    return Verdict(True, "ok", "", time.perf_counter() - start, tree)


def agrees(expected: str, verdict: Verdict) -> bool:
    if expected in RESOLVES:
        return verdict.ok
    return not verdict.ok and verdict.kind != "crash"


def right_kind(expected: str, kind: str) -> bool:
    if expected == "resolution":
        return kind in RESOLUTION_KINDS or kind == "sfConfig"
    if expected == "link":
        # SmartFrog's link phase also applies functions, finds TBDs and cycles, and checks
        # static schemas (a schema failure reaches the caller as a link resolution failure)
        return kind in ("link", "tbd", "cyclic", "function", "schema")
    return expected == kind


def any_right_kind(expected: str, verdict: Verdict) -> bool:
    return any(right_kind(expected, kind) for kind in verdict.kinds or (verdict.kind,))


# ---------------------------------------------------------------------- asserted values
def _get(tree: object, *path: str) -> object:
    for step in path:
        if not isinstance(tree, dict) or step not in tree:
            return None
        tree = tree[step]
    return tree


def _year_and_day(value: object) -> bool:
    now = time.localtime()
    return isinstance(value, str) and str(now.tm_year) in value and str(now.tm_mday) in value


def _consecutive(tree: object) -> bool:
    first, second = _get(tree, "sequence1"), _get(tree, "sequence2")
    return isinstance(first, int) and isinstance(second, int) and second - first == 1


FUNCTIONS = "org/smartfrog/test/system/functions/"
REFERENCES = "org/smartfrog/test/system/reference/"
CRICKETERS = ["Macgrath", "Hayden", "Ponting"]
#: (file, what is checked, check of the resolved tree) as the Java tests assert them.
ASSERTIONS: list[tuple[str, str, Callable[[object], bool]]] = [
    (
        FUNCTIONS + "tcp9.sf",
        'message contains "Hello World"',
        lambda t: "Hello World" in str(_get(t, "message")),
    ),
    (
        FUNCTIONS + "tcp10.sf",
        "administrators == [Macgrath, Hayden, Ponting]",
        lambda t: _get(t, "administrators") == CRICKETERS,
    ),
    (
        FUNCTIONS + "tcp11.sf",
        "logMessage == 3 appended strings",
        lambda t: (
            _get(t, "logMessage")
            == ["This is a test for the append function", "provided by", "smartfrog framework"]
        ),
    ),
    (
        FUNCTIONS + "tcp12.sf",
        "message contains the formatted text",
        lambda t: (
            "Unable to connect to host remoteHost.india.hp.com at port 50002"
            in str(_get(t, "message"))
        ),
    ),
    (
        FUNCTIONS + "tcp13.sf",
        'base contains "value is 99\\n"',
        lambda t: "value is 99\n" in str(_get(t, "base")),
    ),
    (FUNCTIONS + "tcp14.sf", "test == 1000", lambda t: _get(t, "test") == 1000),
    (
        FUNCTIONS + "tcp15.sf",
        "1 <= throw1 <= 6",
        lambda t: isinstance(_get(t, "throw1"), int) and 1 <= _get(t, "throw1") <= 6,  # type: ignore[operator]
    ),
    (FUNCTIONS + "tcp16.sf", "sequence2 - sequence1 == 1", _consecutive),
    (
        FUNCTIONS + "tcp17.sf",
        "today contains the year and day",
        lambda t: _year_and_day(_get(t, "today")),
    ),
    (
        REFERENCES + "tcp23.sf",
        "administrators == [Macgrath, Hayden, Ponting]",
        lambda t: _get(t, "administrators") == CRICKETERS,
    ),
    (
        REFERENCES + "tcp24.sf",
        "component1:limit == 5",
        lambda t: _get(t, "component1", "limit") == 5,
    ),
]


# ---------------------------------------------------------------------------- reporting
def run_mode(
    name: str,
    judged: dict[str, tuple[Expectation, Path]],
    include_dirs: list[Path],
    properties: dict[str, str],
    extra: list[tuple[str, Path]],
) -> ModeResult:
    result = ModeResult(name)
    for relative, (_, path) in judged.items():
        result.verdicts[relative] = run_one(path, include_dirs, properties)
    for relative, path in extra:
        if relative not in result.verdicts:
            result.verdicts[relative] = run_one(path, include_dirs, properties)
    return result


def report(
    result: ModeResult, judged: dict[str, tuple[Expectation, Path]], show_failures: int
) -> Iterator[str]:
    must_resolve = [r for r, (e, _) in judged.items() if e.outcome in RESOLVES]
    rejections = [r for r, (e, _) in judged.items() if e.outcome not in RESOLVES]
    agree = [r for r, (e, _) in judged.items() if agrees(e.outcome, result.verdicts[r])]
    resolved = [r for r in must_resolve if result.verdicts[r].ok]
    rejected = [r for r in rejections if not result.verdicts[r].ok]
    kind_ok = [r for r in rejected if any_right_kind(judged[r][0].outcome, result.verdicts[r])]
    total = sum(v.seconds for v in result.verdicts.values())
    slowest = max(result.verdicts.items(), key=lambda item: item[1].seconds)
    crashes = [r for r, v in result.verdicts.items() if v.kind == "crash"]
    yield f"== mode {result.name}"
    yield (
        f"agreement: {len(agree)} of {len(judged)} judged files "
        f"({100 * len(agree) / max(1, len(judged)):.1f}%)"
    )
    yield f"  must resolve: {len(resolved)} of {len(must_resolve)} resolve"
    yield (
        f"  must be rejected: {len(rejected)} of {len(rejections)} rejected, "
        f"{len(kind_ok)} for the right kind of error"
    )
    yield f"  crashes: {len(crashes)}"
    for relative in sorted(rejections):
        expectation, verdict = judged[relative][0], result.verdicts[relative]
        good = not verdict.ok and any_right_kind(expectation.outcome, verdict)
        mark = "ok " if good else "BAD"
        expected = expectation.outcome
        got = ",".join(verdict.kinds) if verdict.kinds else verdict.kind
        yield f"  rejection {mark} expected {expected:<10} got {got:<8} {relative}"
    passed = 0
    for relative, label, check in ASSERTIONS:
        verdict = result.verdicts.get(relative)
        good = verdict is not None and verdict.ok and check(verdict.tree)
        passed += good
        value = "(not resolved)" if verdict is None or not verdict.ok else ""
        yield f"  asserted {'ok ' if good else 'BAD'} {relative.rsplit('/', 1)[1]}: {label} {value}"
    yield f"asserted values: {passed} of {len(ASSERTIONS)}"
    yield f"slowest file: {slowest[0]} ({slowest[1].seconds:.2f} s)"
    yield f"total validate time: {total:.1f} s over {len(result.verdicts)} files"
    kinds = Counter(v.kind for r, v in result.verdicts.items() if r in must_resolve and not v.ok)
    yield f"  why must-resolve files failed: {dict(kinds.most_common())}"
    shown = 0
    for relative in must_resolve:
        verdict = result.verdicts[relative]
        if not verdict.ok and shown < show_failures:
            shown += 1
            yield f"  FAIL {relative}: {verdict.message[:300]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--mode", choices=("real", "ours", "both"), default="both")
    parser.add_argument("--show-failures", type=int, default=0)
    parser.add_argument("--only", help="judge only files whose name contains this")
    options = parser.parse_args(argv)
    checkout: Path = options.checkout.resolve()
    generated = generated_root(checkout, Path(tempfile.mkdtemp(prefix="sf-generated-")))
    roots = [*class_path_roots(checkout), generated]
    expectations = derive_expectations(checkout)
    judged: dict[str, tuple[Expectation, Path]] = {}
    broken: list[str] = []
    for relative, expectation in sorted(expectations.items()):
        if options.only and options.only not in relative:
            continue
        path = locate(relative, roots)
        if path is None:
            continue
        if missing_include(path, roots) is not None:
            broken.append(relative)
        else:
            judged[relative] = (expectation, path)
    extra = [(r, p) for r, _ in [(a[0], a) for a in ASSERTIONS] if (p := locate(r, roots))]
    properties = test_properties(checkout)
    outcomes = Counter(e.outcome for e, _ in judged.values())
    print(f"checkout: {checkout}")
    print(f"class-path roots: {len(roots)}; test-named files: {len(expectations)}")
    print(
        f"test-named files found in the checkout: {len(judged) + len(broken)}; not judged, "
        f"as they include files the checkout lacks (SmartFrog cannot load them): {len(broken)}"
    )
    print(f"expected outcomes: {dict(outcomes.most_common())}")
    modes = ["real", "ours"] if options.mode == "both" else [options.mode]
    os.environ.pop("SDMESH_PATH", None)
    for mode in modes:
        # ours: sdmesh's library first, so it shadows SmartFrog's core names; the rest of the
        # class path (examples, components) still comes from the checkout.
        include_dirs = roots if mode == "real" else [library_dir(), *roots]
        result = run_mode(mode, judged, include_dirs, properties, extra)
        for line in report(result, judged, options.show_failures):
            print(line)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
