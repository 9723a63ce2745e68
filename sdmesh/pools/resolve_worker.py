"""Agent-side resolution in a process that can be stopped (issue 11, item 5).

A descriptor that reaches an agent is hostile until resolved. Resolved in a thread of the
agent, one that never ends (``#include "/proc/kmsg"`` blocked forever) took the API's
submissions with it, and SIGTERM waited on the thread. Here it is resolved in a child
interpreter the agent keeps warm, under the agent's policy (built-in library and sent files
only, :mod:`sdmesh.language.policy`) and the value bounds (:mod:`sdmesh.language.limits`),
with an address-space limit (RLIMIT_AS), a CPU limit per job (RLIMIT_CPU) and a wall-clock
timeout. A job over its time or memory is killed with its process, and a fresh one is
started at once. The child dies with the agent (PR_SET_PDEATHSIG, and end of its input), so
SIGTERM always works.

The child answers with the pool spec and the resolved tree, pickled; the agent unpickles
them with an allow-list of the description model's classes only.

Protocol (private to this module): frames of an 8-byte big-endian length and a pickle, one
request then one answer: ``("spec", body, submitted_by)`` -> ``("ok", (spec, tree))``,
``("tree", spec)`` -> ``("ok", tree)``, or ``("error", message)`` for a descriptor that
does not make a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import ctypes
import gc
import io
import logging
import os
import pickle
import resource
import signal
import struct
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from sdmesh.language.values import Attr, Part, Placement, Reference
from sdmesh.pools.records import PoolSpec
from sdmesh.pools.submission import SubmissionError

log = logging.getLogger(__name__)

#: Wall-clock seconds one resolution may take (the API's own submission limit is 30 s).
RESOLVE_SECONDS = 20.0
#: CPU seconds one resolution may use before the kernel stops it (SIGXCPU).
RESOLVE_CPU_SECONDS = 15
#: Address space of the worker process: far above what the value bounds let a descriptor
#: use (tens of MB), a backstop should they ever miss something.
WORKER_MEMORY_BYTES = 512 * 1024 * 1024
#: A warm worker is replaced after this many jobs (memory fragmentation, caches).
JOBS_PER_WORKER = 500
#: Largest answer the agent accepts from its worker.
MAX_ANSWER_BYTES = 512 * 1024 * 1024

_NO_MEMORY = "resolving the descriptor needs more memory than allowed"
_HEADER = struct.Struct(">Q")
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


class ResolutionStopped(SubmissionError):
    """The worker was stopped: the descriptor took more time or memory than allowed.

    ``busy`` when only the wall clock ran out (a loaded host may be the cause: a 503, try
    again); otherwise the descriptor itself used too much CPU or memory (a 400)."""

    def __init__(self, message: str, *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


# ============================================================================ agent side
class _ModelUnpickler(pickle.Unpickler):
    """Unpickles only the description model, a pool spec and plain built-in values."""

    ALLOWED: Mapping[str, frozenset[str]] = {
        "sdmesh.language.values": frozenset(
            {
                "Long",
                "Float32",
                "NULL",
                "TBD",
                "Part",
                "Reference",
                "Apply",
                "Attr",
                "Placement",
                "ComponentDescription",
            }
        ),
        "sdmesh.language.source": frozenset({"Source", "Location"}),
        "sdmesh.pools.records": frozenset({"PoolSpec"}),
        "builtins": frozenset({"frozenset", "set", "object"}),
        "copyreg": frozenset({"_reconstructor"}),
    }

    def find_class(self, module: str, name: str) -> Any:
        if name in self.ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the resolver's answer names {module}.{name}")


def _load_answer(data: bytes) -> Any:
    """Unpickle an answer; the cyclic collector is paused meanwhile (thousands of new
    objects would run it many times over, for nothing: none of them is garbage)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _ModelUnpickler(io.BytesIO(data)).load()
    finally:
        if enabled:
            gc.enable()


class ResolveWorker:
    """One warm child interpreter that resolves descriptors for the agent, one at a time."""

    def __init__(
        self,
        *,
        timeout: float | None = None,
        cpu_seconds: int = RESOLVE_CPU_SECONDS,
        memory_bytes: int = WORKER_MEMORY_BYTES,
        jobs_per_worker: int = JOBS_PER_WORKER,
    ) -> None:
        self.timeout = RESOLVE_SECONDS if timeout is None else timeout
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.jobs_per_worker = jobs_per_worker
        self._process: asyncio.subprocess.Process | None = None
        self._jobs = 0
        self._lock = asyncio.Lock()
        #: Workers killed because a job ran over (a figure for tests and metrics).
        self.killed = 0

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the child now (else the first job does): the agent pays the interpreter's
        start-up at boot rather than on a submission."""
        async with self._lock:
            await self._ensure()

    async def build_spec_and_tree(
        self, body: Mapping[str, Any], submitted_by: str = ""
    ) -> tuple[PoolSpec, Any]:
        """``submission.build_spec_and_tree`` under the agent's policy, in the worker."""
        answer = await self._run(("spec", dict(body), submitted_by))
        spec, tree = answer
        if not isinstance(spec, PoolSpec):
            raise ResolutionStopped("the resolver answered with something else than a pool")
        return spec, tree

    async def spec_tree(self, spec: PoolSpec) -> Any:
        """The resolved tree of a spec from another agent (its digest checked), resolved
        in the worker under the agent's policy."""
        return await self._run(("tree", spec))

    async def close(self) -> None:
        """Kill the child (agent shutdown); a later job starts a new one."""
        await self._kill()

    # -- internals ----------------------------------------------------------------------
    async def _run(self, request: tuple[object, ...]) -> Any:
        async with self._lock:
            process = await self._ensure()
            assert process.stdin is not None and process.stdout is not None
            payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                process.stdin.write(_HEADER.pack(len(payload)) + payload)
                async with asyncio.timeout(self.timeout):
                    await process.stdin.drain()
                    (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
                    if size > MAX_ANSWER_BYTES:
                        raise ResolutionStopped("the resolver's answer is too large")
                    data = await process.stdout.readexactly(size)
            except TimeoutError:
                await self._replace()
                raise ResolutionStopped(
                    f"resolving the descriptor took over {self.timeout:.0f} s and was stopped "
                    "(the agent may be busy: try again, or submit through another agent)",
                    busy=True,
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError, ResolutionStopped) as error:
                returncode = await self._replace(grace=1.0)
                raise ResolutionStopped(_why_stopped(returncode, error)) from None
            except BaseException:  # cancelled mid-job: the answer would desynchronise
                await self._kill()
                raise
            self._jobs += 1
            if self._jobs >= self.jobs_per_worker:
                await self._kill()
                await self._ensure()
        status, value = _load_answer(data)
        if status == "error":
            raise SubmissionError(str(value))
        return value

    async def _replace(self, grace: float = 0.0) -> int | None:
        """Kill a worker that ran over and start the next one now: it warms up (imports)
        while idle, so the next submission does not pay for it. The old one's exit status."""
        returncode = await self._kill(grace)
        self.killed += 1
        with contextlib.suppress(OSError):
            await self._ensure()
        return returncode

    async def _ensure(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        self._jobs = 0
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sdmesh.pools.resolve_worker",
            str(self.memory_bytes),
            str(self.cpu_seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=worker_environment(),
            cwd="/",
        )
        return self._process

    async def _kill(self, grace: float = 0.0) -> int | None:
        """Kill the child (after ``grace`` seconds to end by itself, when it closed its
        output: its exit status then says why); its exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        if grace:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(Exception):
            if process.stdin is not None:
                process.stdin.close()
        return await process.wait()


#: What the worker inherits of the agent's environment: how to run Python and find the
#: library, nothing else (the agent's secrets, tokens or proxies are none of its business).
_INHERITED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "PYTHONPATH",
    "SDMESH_LIBRARY",
    "SDMESH_MAX_DESCRIPTOR_BYTES",
)


def worker_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _why_stopped(returncode: int | None, error: BaseException) -> str:
    if isinstance(error, ResolutionStopped):
        return str(error)
    if returncode == -signal.SIGXCPU:
        return "resolving the descriptor used more CPU time than allowed and was stopped"
    return "resolving the descriptor ran out of the memory allowed and was stopped"


#: One worker per event loop: its pipes and lock belong to the loop that made them (tests
#: run one loop after another in a process; an agent has one).
_workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResolveWorker] = (
    weakref.WeakKeyDictionary()
)


def default_worker() -> ResolveWorker:
    """The running loop's worker (the agent's: one per process)."""
    loop = asyncio.get_running_loop()
    worker = _workers.get(loop)
    if worker is None:
        worker = _workers[loop] = ResolveWorker()
    return worker


async def build_spec_and_tree_in_worker(
    body: Mapping[str, Any], submitted_by: str = ""
) -> tuple[PoolSpec, Any]:
    """What the agent awaits for ``POST /v1/pools``: SubmissionError (400) for a descriptor
    that does not make a pool, ResolutionStopped (a SubmissionError) when it ran over."""
    return await default_worker().build_spec_and_tree(body, submitted_by)


async def spec_tree_in_worker(spec: PoolSpec) -> Any:
    """What the agent awaits for a spec it did not resolve itself (from another agent)."""
    return await default_worker().spec_tree(spec)


async def stop_resolver() -> None:
    """Kill the running loop's worker (agent shutdown)."""
    worker = _workers.pop(asyncio.get_running_loop(), None)
    if worker is not None:
        await worker.close()


# ============================================================================ child side
def _confine(memory_bytes: int) -> None:
    """Die with the agent; no new privileges; a bounded address space; no Ctrl-C noise."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.getppid() == 1:  # the agent is already gone
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _allow_cpu(seconds: int) -> None:
    """Let this job use ``seconds`` more of CPU (RLIMIT_CPU counts the process's total)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _answer(request: tuple[Any, ...]) -> tuple[str, object]:
    from sdmesh.pools.submission import build_spec_and_tree, resolve_spec_tree

    try:
        if request[0] == "spec":
            return "ok", build_spec_and_tree(request[1], request[2])
        if request[0] == "tree":
            return "ok", resolve_spec_tree(request[1])
        return "error", "unknown request"
    except SubmissionError as error:
        return "error", str(error)
    except MemoryError:
        return "error", _NO_MEMORY
    except Exception:  # a resolver bug: say so without details, log them for the operator
        log.exception("the resolver failed")
        return "error", "the descriptor could not be resolved: internal error (see the agent's log)"


def _fields(value: Attr | Part | Placement) -> tuple[object, tuple[object, ...]]:
    """Pickle a frozen dataclass by its constructor: the generic ``__getstate__`` of a
    slotted dataclass runs in Python and took two thirds of a 1,000-VM tree's pickling."""
    if type(value) is Attr:
        assert isinstance(value, Attr)
        return Attr, (value.value, value.tags, value.location)
    if type(value) is Part:
        assert isinstance(value, Part)
        return Part, (value.kind, value.name, value.plain)
    assert isinstance(value, Placement)
    return Placement, (value.path, value.name, value.attr)


def _reference(value: Reference) -> tuple[object, tuple[object, ...]]:
    """A reference by its constructor, keeping "no default" (a sentinel object) as such."""
    args = (value.parts, value.location, value.lazy, value.data, value.optional)
    return Reference, (*args, value.default) if value.has_default else args


_REDUCERS: dict[type, Callable[[Any], object]] = {
    **copyreg.dispatch_table,
    Attr: _fields,
    Part: _fields,
    Placement: _fields,
    Reference: _reference,
}


def _pickled(answer: object) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _REDUCERS  # type: ignore[assignment]
    pickler.dump(answer)
    return buffer.getvalue()


def _encoded_answer(request: bytes) -> bytes:
    """The answer to one request, pickled (a tree too large to pickle is an error; the
    tree is released when this returns, before the error is sent)."""
    try:
        return _pickled(_answer(pickle.loads(request)))
    except MemoryError:
        return pickle.dumps(("error", _NO_MEMORY))


def serve(memory_bytes: int, cpu_seconds: int) -> None:
    """The child's loop: one request, one answer, until the agent closes the pipe."""
    # Keep the protocol on a private descriptor; stray prints go to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _confine(memory_bytes)
    from sdmesh.language import RECURSION_LIMIT
    from sdmesh.pools import submission  # noqa: F401  (warm: imported before any job)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    stdin = sys.stdin.buffer
    while True:
        data = _read_frame(stdin)
        if data is None:
            return
        _allow_cpu(cpu_seconds)
        started = time.monotonic()
        payload = _encoded_answer(data)
        out.write(_HEADER.pack(len(payload)) + payload)
        out.flush()
        log.debug("resolved in %.3f s", time.monotonic() - started)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
