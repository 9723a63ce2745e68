"""Parse + resolve a generated descriptor of 10,000 components (issue 2's figure).

Prints the time of each phase (best of several runs), peak memory of a fresh process doing one
resolve, and, as a same-run baseline, ``json.loads`` of the resolved tree (a C parser reading
the same data: the floor any pure-Python parser is measured against).

    .venv/bin/python bench/language_parse.py [--components 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdmesh.language import resolve_file
from sdmesh.language.lexer import tokenize
from sdmesh.language.loader import Loader
from sdmesh.language.resolver import Resolver
from sdmesh.language.schema import SchemaChecker
from sdmesh.language.source import Reporter, Source


def generate(components: int) -> str:
    """A pool of smart domains (Compound + qcow2 disk + Xen VM): three components each."""
    domains = max(1, (components - 2) // 3)
    lines = [
        '#include "sdmesh/components.sf"',
        "Worker extends XenDomain {",
        '    kernel "/boot/vmlinuz"; gateway "10.0.0.1"; netmask "255.255.0.0";',
        "    memory (ATTRIB baseMemory * 2);",
        "}",
        "sfConfig extends Compound {",
        "    baseMemory 64;",
        "    pool extends VirtualPool {",
    ]
    for i in range(domains):
        lines.append(
            f"        sd{i} extends Compound {{ sfSyncTerminate true; "
            f'disk extends Qcow2OverlayBackend {{ baseImage "/var/lib/sdmesh/base.qcow2"; }} '
            f'vm extends Worker {{ hostname "vm{i}"; ip "10.0.{i // 250}.{i % 250 + 2}"; '
            f"storageBackend LAZY ATTRIB disk; }} }}"
        )
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


def phases(path: Path) -> dict[str, float]:
    """Time each phase separately on one run."""
    times: dict[str, float] = {}
    text = path.read_text()
    start = time.perf_counter()
    tokenize(Source(str(path), text), Reporter())
    times["tokenize"] = time.perf_counter() - start

    reporter = Reporter()
    start = time.perf_counter()
    root = Loader(reporter).load_file(path)
    times["load (tokenize+parse, with includes)"] = time.perf_counter() - start
    assert root is not None
    resolver = Resolver(reporter)
    start = time.perf_counter()
    resolver.type_tree(root)
    times["type"] = time.perf_counter() - start
    start = time.perf_counter()
    resolver.place_tree(root)
    times["place"] = time.perf_counter() - start
    config = root.attrs["sfConfig"].value
    start = time.perf_counter()
    resolver.link_tree(config)  # type: ignore[arg-type]
    times["link"] = time.perf_counter() - start
    start = time.perf_counter()
    SchemaChecker(resolver, reporter).check_tree(config)  # type: ignore[arg-type]
    times["schema"] = time.perf_counter() - start
    assert not reporter.failed, reporter.diagnostics[:3]
    return times


def peak_memory_mib(path: Path) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh interpreter: after imports only, and after one resolve."""
    # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss across exec.
    code = (
        "import sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "from sdmesh.language import resolve_file\n"
        "base = hwm()\n"
        "resolve_file(sys.argv[1])\n"
        "print(base, hwm())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.sf"
        path.write_text(generate(args.components))
        size_kib = path.stat().st_size / 1024

        totals = []
        for _ in range(args.runs):
            start = time.perf_counter()
            resolved = resolve_file(path)
            totals.append(time.perf_counter() - start)
        count = sum(1 for _ in _walk(resolved.root))

        tree_json = json.dumps(resolved.to_json())
        floors = []
        for _ in range(args.runs):
            start = time.perf_counter()
            json.loads(tree_json)
            floors.append(time.perf_counter() - start)

        breakdown = phases(path)
        base_rss, peak_rss = peak_memory_mib(path)

    best, median = min(totals), statistics.median(totals)
    print(f"descriptor: {count} components, {size_kib:.0f} KiB of source (+ built-in library)")
    print(f"parse+resolve: best {best:.3f} s, median {median:.3f} s over {args.runs} runs")
    for name, seconds in breakdown.items():
        print(f"  {name:<40} {seconds:.3f} s")
    print(
        f"baseline json.loads of the resolved tree ({len(tree_json) / 1024:.0f} KiB): "
        f"{min(floors):.3f} s -> ratio {best / min(floors):.1f}x"
    )
    print(f"peak RSS: {peak_rss:.0f} MiB ({peak_rss - base_rss:.0f} MiB above the interpreter)")
    print(f"target < 1 s: {'met' if best < 1 else 'NOT met'}")


def _walk(cd):  # type: ignore[no-untyped-def]
    yield cd
    for _, child in cd.children():
        yield from _walk(child)


if __name__ == "__main__":
    main()
