"""The nemesis executor: agents on network-namespace hosts, faults from a seeded schedule, and
a sampler feeding the checker of ``sdmesh.testing.nemesis`` with every agent's API.

Why a module of the package: the short pytest run and the long ``bench/nemesis.py`` drive the
same code. The sampler reads ``/v1/health`` (the libvirt domains each agent really runs) of
every host at once, several times a second, on the agents' control sockets (files: reachable
whatever the network faults). A host whose agent process is dead runs nothing: the test
driver's domains live in the agent's process, as a rebooted hypervisor's would be gone.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.testing.agents import SdmeshAgent, wait_answering
from sdmesh.testing.api import socket_call
from sdmesh.testing.nemesis import (
    CUTS,
    Fault,
    FaultKind,
    OverlapTracker,
    RoundResult,
    RunResult,
    convergence_problems,
    pool_of,
)
from sdmesh.testing.netns import Host, Proc, Testbed

SAMPLE_EVERY = 0.25


class NotAnswering(RuntimeError):
    """An agent's API did not answer (not up yet, gone, or too slow)."""


def pool_text(count: int, *, memory: int = 256) -> str:
    """``count`` VMs side by side, each with its own qcow2 disk, restarted "always"."""
    vms = "\n".join(
        f"""        sd{i} extends Compound {{
            sfSyncTerminate true;
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory {memory}; restart "always"; hostname "vm{i}";
                storageBackend LAZY ATTRIB disk;
            }}
        }}"""
        for i in range(count)
    )
    return (
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/combinators/parallel.sf"\n'
        "sfConfig extends Compound {\n    pool extends Parallel {\n"
        f"        asynchCreateChild true;\n{vms}\n    }}\n}}\n"
    )


class NemesisMesh:
    """``sdmesh join`` on each host with its own simulated hypervisor, and its API."""

    def __init__(self, testbed: Testbed, *, memory_mib: int = 4096, cpus: int = 4) -> None:
        self.testbed = testbed
        self.kind = SdmeshAgent(testbed)
        self.procs: dict[str, Proc] = {}
        self.uris = {
            h.name: write_simulated_host(
                testbed.workdir / f"{h.name}-hypervisor.xml", cpus=cpus, memory_mib=memory_mib
            )
            for h in testbed.hosts
        }
        self.cut: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=len(testbed.hosts) * 2)

    @property
    def hosts(self) -> list[Host]:
        return list(self.testbed.hosts)

    def host(self, name: str) -> Host:
        return next(h for h in self.testbed.hosts if h.name == name)

    def start(self, host: Host) -> Proc:
        self.kind.hypervisor = self.uris[host.name]
        seeds = [h for h in self.hosts if h != host and self.alive(h)] or []
        self.procs[host.name] = self.kind.start(host, seeds)
        return self.procs[host.name]

    def start_all(self, timeout: float = 90.0) -> None:
        first, *rest = self.hosts
        self.start(first)
        wait_answering(self.kind, [first], timeout=timeout)
        for host in rest:
            self.start(host)
        wait_answering(self.kind, self.hosts, timeout=timeout)

    def alive(self, host: Host) -> bool:
        proc = self.procs.get(host.name)
        return proc is not None and proc.alive()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the API -------------------------------------------------------------------------------
    def call(
        self, host: Host, method: str, path: str, body: object = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        try:
            return socket_call(self.kind.socket_path(host), method, path, body, timeout)
        except (OSError, http.client.HTTPException) as error:
            raise NotAnswering(f"{method} {path} on {host.name}: {error}") from error

    def get(self, host: Host, path: str) -> Any:
        status, body = self.call(host, "GET", path)
        if status != 200:
            raise NotAnswering(f"GET {path} on {host.name}: {status}")
        return body

    def everywhere(self, fn: Callable[[Host], Any]) -> dict[str, Any]:
        """``fn`` on every live host at once (one look is one instant); silent ones omitted."""
        live = [h for h in self.hosts if self.alive(h)]
        futures = {h.name: self._pool.submit(fn, h) for h in live}
        found: dict[str, Any] = {}
        for name, future in futures.items():
            with contextlib.suppress(NotAnswering, OSError, ValueError, KeyError):
                found[name] = future.result()
        return found

    def domains(self) -> dict[str, list[str]] | None:
        """Every host's domains at one instant; None when a live agent did not answer (a
        dead agent runs nothing)."""
        live = [h.name for h in self.hosts if self.alive(h)]
        found = self.everywhere(lambda h: list(self.get(h, "/v1/health")["domains"]))
        if set(live) - set(found):
            return None
        return {h.name: found.get(h.name, []) for h in self.hosts}

    def statuses(self, pools: Sequence[str]) -> dict[str, dict[str, dict[str, Any] | None]]:
        def read(host: Host) -> dict[str, dict[str, Any] | None]:
            out: dict[str, dict[str, Any] | None] = {}
            for pool in pools:
                status, body = self.call(host, "GET", f"/v1/pools/{pool}")
                out[pool] = body if status == 200 and isinstance(body, dict) else None
            return out

        answered = self.everywhere(read)
        return {
            h.name: answered.get(h.name, dict.fromkeys(pools)) for h in self.hosts if self.alive(h)
        }

    def volumes(self, pools: Sequence[str]) -> list[str]:
        """Volume files of ``pools`` (disks, seed ISOs: named ``<pool>-...`` or carrying
        ``sdm-<pool>-``) left in any agent's volume directory; locks are not volumes."""
        left = []
        for host in self.hosts:
            root = self.kind.home(host) / "state" / "volumes"
            for path in root.rglob("*") if root.is_dir() else ():
                if "locks" in path.relative_to(root).parts or not path.is_file():
                    continue
                if any(path.name.startswith(f"{p}-") or f"sdm-{p}-" in path.name for p in pools):
                    left.append(f"{host.name}: {path.relative_to(root)}")
        return sorted(left)


class Sampler(threading.Thread):
    """Looks at every host's domains continuously and feeds the overlap tracker."""

    def __init__(self, mesh: NemesisMesh, tracker: OverlapTracker) -> None:
        super().__init__(name="nemesis-sampler", daemon=True)
        self.mesh, self.tracker = mesh, tracker
        self.round = -1
        self.latest: dict[str, list[str]] = {}
        self._halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        known: dict[tuple[str, int], list[str]] = {}  # (host, agent pid) -> its last answer
        while not self._halt.is_set():
            found = self.mesh.everywhere(lambda h: list(self.mesh.get(h, "/v1/health")["domains"]))
            now = time.monotonic()
            look: dict[str, list[str]] = {}
            for host in self.mesh.hosts:
                proc = self.mesh.procs.get(host.name)
                if proc is None or not proc.alive():
                    look[host.name] = []  # the test driver's domains died with the agent
                    continue
                key = (host.name, proc.pid)
                if host.name in found:
                    known[key] = found[host.name]
                # A slow agent keeps what it last said; a fresh one that has not answered yet
                # has had no time to start anything.
                look[host.name] = known.get(key, [])
            with self.lock:
                self.latest = look
                self.tracker.observe(now, look, set(self.mesh.cut), self.round)
            self._halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        with self.lock:
            self.tracker.close(time.monotonic())


def _apply(mesh: NemesisMesh, fault: Fault, pools: Sequence[str]) -> tuple[Callable[[], None], str]:
    """Inflict ``fault``; return its heal and the host it fell on. A fault on "a host" falls
    on one running VMs of the pools when there is one (the seed's index into them, in name
    order): a fault on an empty host tests little."""
    members = mesh.hosts
    busy = [h for h in members if any(pool_of(d) in pools for d in _domains_of(mesh, h))]
    candidates = busy if busy and fault.kind is not FaultKind.LOSS else members
    host = candidates[fault.host % len(candidates)]
    if fault.kind is FaultKind.CUT_SHEPHERD:
        pool = pools[fault.pool % len(pools)]
        with contextlib.suppress(NotAnswering):
            shepherd = mesh.get(members[0], f"/v1/pools/{pool}").get("shepherd")
            if shepherd:
                host = mesh.host(str(shepherd))
    if fault.kind in CUTS:
        mesh.cut.add(host.name)
        mesh.testbed.cut(host)

        def heal_cut() -> None:
            mesh.testbed.heal(host)
            mesh.cut.discard(host.name)

        return heal_cut, host.name
    if fault.kind is FaultKind.LOSS:
        mesh.testbed.loss(host, fault.loss_percent, "both")
        return (lambda: mesh.testbed.loss(host, 0)), host.name
    proc = mesh.procs[host.name]
    if fault.kind is FaultKind.KILL_RESTART:
        mesh.testbed.kill(proc)
    else:  # LEAVE_REJOIN: SIGTERM is a graceful leave
        proc.stop(timeout=30)
    return (lambda: (mesh.start(host), None)[1]), host.name


def _domains_of(mesh: NemesisMesh, host: Host) -> list[str]:
    if not mesh.alive(host):
        return []
    with contextlib.suppress(NotAnswering, KeyError, TypeError):
        return list(mesh.get(host, "/v1/health")["domains"])
    return []


def run_nemesis(
    mesh: NemesisMesh,
    faults: Sequence[Fault],
    pools: dict[str, int],
    *,
    seed: int,
    deadline: float = 90.0,
    on_round: Callable[[RoundResult], None] | None = None,
) -> RunResult:
    """Submit ``pools`` (name -> VM count), run each fault then heal it, measure the time to
    converge after each heal, terminate the pools and look for anything left."""
    names = sorted(pools)
    result = RunResult(seed=seed, origin=time.monotonic())
    tracker = OverlapTracker()
    sampler = Sampler(mesh, tracker)
    first = mesh.hosts[0]
    for name, count in pools.items():
        status, body = mesh.call(
            first, "POST", "/v1/pools", {"descriptor": pool_text(count), "name": name}, 30
        )
        if status != 201:
            raise RuntimeError(f"submit {name}: {status} {body}")
    sampler.start()
    try:
        took, problems = _converge(mesh, pools, deadline)
        if took is None:
            raise RuntimeError("the pools never ran before any fault: " + "; ".join(problems))
        for number, fault in enumerate(faults, 1):
            sampler.round = number
            heal, victim = _apply(mesh, fault, names)
            label = fault.describe(victim, names)
            time.sleep(fault.hold)
            heal()
            took, problems = _converge(mesh, pools, deadline)
            row = RoundResult(number, label, fault.kind, took, problems)
            row.overlaps = [o for o in tracker.episodes if o.round == number]
            result.rounds.append(row)
            if on_round:
                on_round(row)
        sampler.round = len(faults) + 1
        result.leftovers = _terminate(mesh, names, deadline)
    finally:
        sampler.stop()
        mesh.testbed.clear_faults()
        mesh.cut.clear()
    result.overlaps = list(tracker.episodes)
    result.samples = tracker.samples
    return result


def _converge(
    mesh: NemesisMesh, pools: dict[str, int], deadline: float
) -> tuple[float | None, list[str]]:
    """Seconds until converged (None past ``deadline``) and the last problems seen."""
    start = time.monotonic()
    problems = ["not looked yet"]
    while time.monotonic() - start < deadline:
        domains = mesh.domains()
        if domains is None:
            problems = ["a live agent did not list its domains"]
        else:
            problems = convergence_problems(pools, mesh.statuses(sorted(pools)), domains)
            if not problems:
                return time.monotonic() - start, []
        time.sleep(0.5)
    return None, problems


def _terminate(mesh: NemesisMesh, pools: Sequence[str], deadline: float) -> list[str]:
    """Terminate every pool; what is left (domains, volumes, states) once it should be gone."""
    first = mesh.hosts[0]
    for pool in pools:
        with contextlib.suppress(NotAnswering):
            mesh.call(first, "DELETE", f"/v1/pools/{pool}", timeout=30)
    start = time.monotonic()
    left = ["not looked yet"]
    while time.monotonic() - start < deadline:
        domains = mesh.domains() or {}
        left = [
            f"{host}: domain {d}" for host, ds in domains.items() for d in ds if pool_of(d) in pools
        ]
        left += [f"volume {v}" for v in mesh.volumes(pools)]
        for agent, by_pool in mesh.statuses(pools).items():
            left += [
                f"{agent}: {pool} {view.get('state')}"
                for pool, view in by_pool.items()
                # A failed pool stays "failed" when terminated; what counts is that it left
                # nothing running or stored.
                if view is not None and view.get("state") not in ("terminated", "failed")
            ]
        if not left:
            return []
        time.sleep(0.5)
    return left


def trusted_operator_env(workdir: Path) -> None:
    """Outside pytest (the bench), agents need a trusted operator to sign submissions with,
    as tests/conftest.py sets up for the suite; a no-op when one is configured."""
    import os

    from sdmesh.safeio import write_private
    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.store import trust_operator

    if os.environ.get("SDMESH_API_SIGNING_KEY"):
        return
    key = OperatorKey.generate("nemesis")
    key_file = workdir / "nemesis.key"
    write_private(key_file, key.file_text().encode(), 0o600)
    trusted = workdir / "operators.d"
    trusted.mkdir(mode=0o700, exist_ok=True)
    trust_operator(trusted, key.public, Role.ADMIN, "the nemesis bench's operator")
    os.environ["SDMESH_OPERATORS_DIR"] = str(trusted)
    os.environ["SDMESH_API_SIGNING_KEY"] = str(key_file)
