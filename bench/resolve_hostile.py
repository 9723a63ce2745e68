"""What agent-side resolution costs (issue 11, item 5): a hostile descriptor until refused,
and the worker's overhead per submission.

Each hostile descriptor of the issue (and a few more built to push one bound each) is sent
to a warm :class:`sdmesh.pools.resolve_worker.ResolveWorker`, as an agent would; we print the
answer's first line, the wall time, and the worker's peak resident memory (VmHWM, a fresh
worker per case so peaks do not carry over). Then a 1,000-VM pool (bench/pool_mesh.py's) is
built in process and through the warm worker, median of several runs each.

    .venv/bin/python bench/resolve_hostile.py [--runs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pool_mesh import pool_text
from sdmesh.language import resolve_text
from sdmesh.pools.resolve_worker import ResolveWorker
from sdmesh.pools.submission import SubmissionError, build_spec_and_tree, request_body

HEAD = '#include "/org/smartfrog/components.sf"\n'


def cases() -> dict[str, str]:
    def compound(body: str) -> str:
        return f"{HEAD}sfConfig extends Compound {{\n{body}\n}}\n"

    def doubling(prefix: str, levels: int) -> str:
        steps = " ".join(
            f"{prefix}{i} ({prefix}{i - 1} ++ {prefix}{i - 1});" for i in range(1, levels)
        )
        return f'{prefix}0 "xxxxxxxxxxxxxxxx"; {steps}'

    mib = doubling("m", 16)
    extends = ["L0 extends { x 1; }"]
    extends += [f"L{i} extends {{ a extends L{i - 1}; b extends L{i - 1}; }}" for i in range(1, 40)]
    return {
        "cluster key include": '#include "/etc/sdmesh/cluster.key"\nsfConfig extends { }\n',
        "/etc/shadow include": '#include "/etc/shadow"\nsfConfig extends { }\n',
        "/proc/kmsg include": '#include "/proc/kmsg"\nsfConfig extends { }\n',
        "ENVPROPERTY HOME": "sfConfig extends { v ENVPROPERTY HOME; }\n",
        "doubling ++ (60 lines)": compound(doubling("s", 60)),
        "vector fan-out x9 (12 levels)": compound(
            "v0 [|1,2,3,4,5,6,7,8,9|]; "
            + " ".join(f"v{i} [{', '.join([f'v{i - 1}'] * 9)}];" for i in range(1, 13))
        ),
        "integer squaring": compound(
            "n0 12345; " + " ".join(f"n{i} (n{i - 1} * n{i - 1});" for i in range(1, 40))
        ),
        "1 MiB string, 100 concats": compound(
            mib + " " + " ".join(f'c{i} (m15 ++ "{i}");' for i in range(100))
        ),
        "1 MiB string, linked 100x": compound(
            mib + " " + " ".join(f"c{i} m15;" for i in range(100))
        ),
        "formatString $1 x 1000": compound(
            mib + f' f extends formatString {{ format "{"$1" * 1000}"; s1 m10; }}'
        ),
        "extends doubling (40 levels)": "\n".join([*extends, "sfConfig extends L39;"]) + "\n",
    }


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def hostile() -> None:
    print(f"{'descriptor':32}{'bytes':>7}{'seconds':>9}{'peak MiB':>10}  answer")
    for name, text in cases().items():
        worker = ResolveWorker()
        await worker.start()
        # warm the child (imports) so its peak is the descriptor's, not the start-up's
        await worker.build_spec_and_tree({"name": "w", "descriptor": "sfConfig extends { }"})
        pid = worker.pid
        assert pid is not None
        started = time.perf_counter()
        try:
            await worker.build_spec_and_tree({"name": "p", "descriptor": text})
            answer = "accepted"
        except SubmissionError as error:
            lines = str(error).splitlines()
            answer = next((line for line in lines if "error:" in line), lines[0])
            answer = answer.split("error: ", 1)[-1]
        seconds = time.perf_counter() - started
        peak = peak_mib(pid) if worker.pid == pid else float("nan")
        print(f"{name:32}{len(text):>7}{seconds:>9.3f}{peak:>10.1f}  {answer[:90]}")
        await worker.close()


async def overhead(runs: int) -> None:
    body = request_body(resolve_text(pool_text(1000), "bench.sf"), "bench")
    worker = ResolveWorker()
    started = time.perf_counter()
    await worker.build_spec_and_tree(body)
    cold = time.perf_counter() - started
    inline: list[float] = []
    through: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        build_spec_and_tree(body)
        inline.append(time.perf_counter() - started)
        started = time.perf_counter()
        await worker.build_spec_and_tree(body)
        through.append(time.perf_counter() - started)
    await worker.close()
    a, b = statistics.median(inline), statistics.median(through)
    print(f"\n1,000-VM pool ({len(str(body['descriptor'])):,} chars canonical), median of {runs}:")
    print(f"  in process {a:.3f} s, warm worker {b:.3f} s, overhead {b - a:.3f} s")
    print(f"  first job on a cold worker {cold:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    sys.setrecursionlimit(10_000)
    asyncio.run(hostile())
    asyncio.run(overhead(args.runs))


if __name__ == "__main__":
    main()
