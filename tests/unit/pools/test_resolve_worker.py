"""Issue 11.5: agent-side resolution runs in a child process the agent can stop. It answers
what the in-process resolution answers; a job over its time or memory is killed with its
process and the next job gets a fresh one; the child dies with the agent."""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdmesh.language import resolve_text
from sdmesh.language.render import to_sf
from sdmesh.language.values import Reference
from sdmesh.pools.resolve_worker import (
    ResolutionStopped,
    ResolveWorker,
    _load_answer,
    _pickled,
    build_spec_and_tree_in_worker,
    default_worker,
    stop_resolver,
)
from sdmesh.pools.submission import SubmissionError, build_spec_and_tree, request_body

ROOT = Path(__file__).resolve().parents[3]
SMALL = '#include "/org/smartfrog/components.sf"\nsfConfig extends Compound { a 1; b (a + 1); }\n'


def bench_body(vms: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    try:
        pool_text = importlib.import_module("bench.pool_mesh").pool_text
    finally:
        sys.path.remove(str(ROOT))
    return request_body(resolve_text(pool_text(vms), "bench.sf"), "bench")


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped yet) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_the_worker_answers_what_the_agent_would_resolve_in_process() -> None:
    body = {"name": "p1", "descriptor": SMALL}

    async def scenario() -> tuple[object, object, int | None, int | None]:
        worker = ResolveWorker()
        try:
            spec, tree = await worker.build_spec_and_tree(body, "me")
            first = worker.pid
            again = await worker.spec_tree(spec)
            return spec, (tree, again), first, worker.pid
        finally:
            await worker.close()

    spec, (tree, again), first, second = run(scenario())  # type: ignore[misc]
    local, _ = build_spec_and_tree(body, "me")
    assert spec == local
    assert tree.get("b") == 2 and again.get("b") == 2
    assert first is not None and first == second  # warm: one process for both jobs


def test_the_worker_inherits_nothing_of_the_agents_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDMESH_TEST_SECRET", "agent-only-3b7f")

    async def scenario() -> tuple[bytes, str]:
        worker = ResolveWorker()
        try:
            await worker.start()
            assert worker.pid is not None
            environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{worker.pid}/cwd")
            return environ, cwd
        finally:
            await worker.close()

    environ, cwd = run(scenario())  # type: ignore[misc]
    assert b"agent-only-3b7f" not in environ and b"PATH=" in environ
    assert cwd == "/"


def test_refusals_come_back_as_submission_errors_and_keep_the_worker() -> None:
    async def scenario() -> list[str]:
        worker = ResolveWorker()
        messages = []
        try:
            for text in (
                '#include "/proc/kmsg"\nsfConfig extends { }\n',
                '#include "/etc/shadow"\nsfConfig extends { }\n',
                "sfConfig extends { v ENVPROPERTY HOME; }\n",
                'sfConfig extends { s0 "xxxxxxxxxxxxxxxx"; '
                + " ".join(f"s{i} (s{i - 1} ++ s{i - 1});" for i in range(1, 40))
                + " }\n",
            ):
                pid = worker.pid
                with pytest.raises(SubmissionError) as info:
                    await worker.build_spec_and_tree({"name": "p", "descriptor": text})
                assert not isinstance(info.value, ResolutionStopped)
                assert pid is None or worker.pid == pid
                messages.append(str(info.value))
        finally:
            await worker.close()
        return messages

    started = time.monotonic()
    kmsg, shadow, env, doubling = run(scenario())  # type: ignore[misc]
    assert time.monotonic() - started < 10
    assert '"/proc/kmsg" is neither in the built-in library' in kmsg
    assert "root:" not in shadow
    assert str(os.environ.get("HOME")) not in env
    assert "max_string" in doubling


def test_a_job_over_its_time_is_killed_and_the_next_gets_a_fresh_worker() -> None:
    body = bench_body(1000)

    async def scenario() -> tuple[int, str]:
        worker = ResolveWorker(timeout=0.05)
        try:
            await worker.start()
            pid = worker.pid
            assert pid is not None
            with pytest.raises(ResolutionStopped) as info:
                await worker.build_spec_and_tree(body)
            assert not alive(pid) and info.value.busy
            assert worker.pid not in (None, pid)  # the next one is started (warming) at once
            worker.timeout = 60
            spec, _ = await worker.build_spec_and_tree({"name": "p", "descriptor": SMALL})
            assert spec.pool == "p" and worker.pid not in (None, pid)
            return worker.killed, str(info.value)
        finally:
            await worker.close()

    killed, message = run(scenario())  # type: ignore[misc]
    assert killed == 1 and "took over 0 s and was stopped" in message


def test_a_job_over_its_memory_is_refused() -> None:
    body = bench_body(1000)

    async def scenario() -> None:
        worker = ResolveWorker(memory_bytes=40 * 1024 * 1024)
        try:
            with pytest.raises(SubmissionError, match="memory") as info:
                await worker.build_spec_and_tree(body)
            assert not getattr(info.value, "busy", False)  # the descriptor's fault: a 400
        finally:
            await worker.close()

    run(scenario())


def test_a_cancelled_job_kills_its_worker() -> None:
    body = bench_body(1000)

    async def scenario() -> int:
        worker = ResolveWorker()
        await worker.start()
        pid = worker.pid
        assert pid is not None
        job = asyncio.create_task(worker.build_spec_and_tree(body))
        await asyncio.sleep(0.05)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        return pid

    pid = run(scenario())
    assert isinstance(pid, int) and not alive(pid)


AGENT = """
import asyncio, sys
from sdmesh.pools.resolve_worker import ResolveWorker
async def main():
    worker = ResolveWorker()
    await worker.start()
    print(worker.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_worker_dies_with_its_agent(how: signal.Signals) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
        assert alive(pid)
        agent.send_signal(how)
        agent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        agent.kill()
        agent.wait()


def test_the_agent_unpickles_only_the_description_model() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"names posix\.system"):
        _load_answer(pickle.dumps(("ok", os.system)))
    text = SMALL.replace(
        "b (a + 1);", "b (a + 1); l LAZY x:y; o LAZY OPTIONAL(3) x:z; n [LAZY OPTIONAL x:w];"
    )
    spec, tree = build_spec_and_tree({"name": "p", "descriptor": text})
    status, (spec2, tree2) = _load_answer(_pickled(("ok", (spec, tree))))
    assert status == "ok" and spec2 == spec and tree2.get("b") == 2
    assert to_sf(tree2) == to_sf(tree) == spec.text
    lazy, optional, listed = tree2.get("l"), tree2.get("o"), tree2.get("n")[0]
    assert isinstance(lazy, Reference) and not lazy.has_default and lazy.lazy
    assert isinstance(optional, Reference) and optional.has_default and optional.default == 3
    assert isinstance(listed, Reference) and listed.optional and not listed.has_default


def test_each_event_loop_gets_its_own_default_worker() -> None:
    async def submit() -> int | None:
        spec, _ = await build_spec_and_tree_in_worker({"name": "p", "descriptor": SMALL})
        assert spec.pool == "p"
        pid = default_worker().pid
        await stop_resolver()
        assert default_worker().pid is None
        return pid

    first, second = run(submit()), run(submit())
    assert isinstance(first, int) and isinstance(second, int) and first != second
    assert not alive(first) and not alive(second)
