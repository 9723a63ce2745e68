"""Pools across real ``sdmesh join`` processes on namespace hosts, sealed with a cluster key.

Five agents, each its own address on a private bridge and its own libvirt test-driver host of a
different size (2 to 6 CPUs, 2 to 6 GiB), plus a spare host that joins later. The module shares
one mesh; each test starts by restoring it (faults cleared, the five agents running and seeing
each other with their capacity) and ends with its pools terminated. Tests check properties (where
VMs run, that none runs twice, that hosts never overcommit), never exact timings: the waits are
generous for a busy two-core machine.

What a test observes of a host is what its agent reports of libvirt (``GET /v1/health``:
managed domains): the test driver keeps domains in the agent's process, so a killed agent's
VMs are gone with it, as a rebooted hypervisor's would be.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.pools.ownership import shepherd as shepherd_of
from sdmesh.pools.ownership import successors
from sdmesh.testing.agents import (
    MemberState,
    SdmeshAgent,
    describe_views,
    reports_gone,
    wait_answering,
    wait_views,
)
from sdmesh.testing.api import socket_call
from sdmesh.testing.netns import Host, Proc, Testbed
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

pytestmark = [pytest.mark.root, pytest.mark.slow]

MESH_SIZE = 5
TIMEOUT = 60.0
DESCRIPTORS = Path(__file__).resolve().parents[3] / "descriptors"
#: (CPUs, MiB) of each host's simulated hypervisor: every host a different size.
SIZES = {"h0": (2, 2048), "h1": (3, 3072), "h2": (4, 4096), "h3": (5, 5120), "h4": (6, 6144)}
SPARE_SIZE = (4, 4096)


class AgentNotReady(RuntimeError):
    """An agent's API did not answer as expected (not up yet, or gone)."""


class PoolAgents(SdmeshAgent):
    """``sdmesh join`` on each host with that host's own simulated hypervisor."""

    def __init__(self, testbed: Testbed) -> None:
        # No fence guard runs in the namespaces: say so, or no restartable VM would start.
        config = testbed.workdir / "pool-agents.toml"
        config.write_text('fence-guard-socket = ""\n')
        super().__init__(testbed, extra_args=["--verbose", "--config", str(config)])
        self.uris: dict[str, str] = {}
        for host in testbed.hosts:
            cpus, memory = SIZES.get(host.name, SPARE_SIZE)
            path = testbed.workdir / f"{host.name}-hypervisor.xml"
            self.uris[host.name] = write_simulated_host(path, cpus=cpus, memory_mib=memory)

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        self.hypervisor = self.uris[host.name]
        return super().start(host, seeds, key=key)


@dataclass
class PoolMesh:
    testbed: Testbed
    kind: PoolAgents
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def members(self) -> list[Host]:
        return self.testbed.hosts[:MESH_SIZE]

    @property
    def spare(self) -> Host:
        return self.testbed.hosts[MESH_SIZE]

    def host(self, name: str) -> Host:
        return next(h for h in self.testbed.hosts if h.name == name)

    def start(self, host: Host, seeds: Sequence[Host] | None = None) -> Proc:
        """Start the agent on ``host``, joining through ``seeds`` (default: every other
        member, so a restarted first agent rejoins rather than starting a mesh of its own)."""
        seeds = self.members if seeds is None else seeds
        self.procs[host.name] = self.kind.start(host, [s for s in seeds if s != host])
        return self.procs[host.name]

    # -- the control API, on each host agent's socket (a file: any namespace reaches it) ------
    def call(
        self, host: Host, method: str, path: str, body: object = None, timeout: float = 15.0
    ) -> tuple[int, Any]:
        try:
            return socket_call(self.kind.socket_path(host), method, path, body, timeout)
        except (OSError, http.client.HTTPException) as error:
            raise AgentNotReady(f"{method} {path} on {host}: {error}") from error

    def get(self, host: Host, path: str) -> Any:
        status, body = self.call(host, "GET", path)
        if status != 200:
            raise AgentNotReady(f"GET {path} on {host}: {status} {body}")
        return body

    def status(self, host: Host, pool: str) -> dict[str, Any]:
        return dict(self.get(host, f"/v1/pools/{pool}"))

    def domains(self, host: Host) -> list[str]:
        return list(self.get(host, "/v1/health")["domains"])

    def domains_everywhere(self, hosts: Sequence[Host] | None = None) -> dict[str, list[str]]:
        """Every host's managed domains, read at once (threads), so one look is one moment."""
        hosts = list(hosts or self.members)
        found: dict[str, list[str]] = {}

        def read(host: Host) -> None:
            found[host.name] = self.domains(host)

        threads = [threading.Thread(target=_quietly(read), args=(h,)) for h in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        missing = [h.name for h in hosts if h.name not in found]
        if missing:
            raise AgentNotReady(f"no domain list from {missing}")
        return found

    def cli(self, host: Host, *args: str, timeout: float = 120.0) -> str:
        """The real CLI, run inside the host (it talks to that host's agent)."""
        done = self.testbed.exec(
            host,
            [sys.executable, "-m", "sdmesh", *args, "--agent", self.kind.agent_url(host)],
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"sdmesh {' '.join(args)} on {host}: {done.stderr}"
        return done.stdout

    # -- waiting -------------------------------------------------------------------------------
    def wait(self, condition: Callable[[], object], message: str, timeout: float = TIMEOUT) -> Any:
        """Poll ``condition`` until it returns something true; agents that do not answer yet
        count as not there yet."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            with contextlib.suppress(AgentNotReady):
                last = condition()
                if last:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"{message} (after {timeout:.0f} s; last: {last})\n{self.report()}")

    def ready(self, hosts: Sequence[Host]) -> None:
        """Every agent sees every one of ``hosts`` alive with its capacity (pools place on
        gossiped capacity, so a member without it is not a host yet)."""
        names = {h.name for h in hosts}

        def everyone_sees_everyone() -> bool:
            for host in hosts:
                peers = self.get(host, "/v1/peers")
                placeable = {
                    p["name"]
                    for p in peers
                    if p["state"] == "alive" and (p.get("meta") or {}).get("capacity")
                }
                if not names <= placeable:
                    return False
            return True

        self.wait(everyone_sees_everyone, "the agents never all saw each other with capacity")

    def restore(self) -> None:
        """Back to five running agents, no fault, no pool VM anywhere, the spare stopped."""
        self.testbed.clear_faults()
        for stray in self.testbed.procs(self.spare):
            stray.kill()
        for host in self.members:
            proc = self.procs.get(host.name)
            if proc is None or not proc.alive():
                self.start(host)
        wait_answering(self.kind, self.members, timeout=TIMEOUT)
        got = wait_views(self.kind, self.members, reports_gone(self.spare.name), timeout=TIMEOUT)
        assert got.complete, f"the spare is still seen alive:\n{self.report()}"
        self.ready(self.members)
        # Whatever an earlier (failed) test left running goes.
        pools = self.get(self.members[0], "/v1/pools")
        alive = [p["pool"] for p in pools if p["state"] not in ("terminated", "failed")]
        if alive:
            self.terminate_everything(alive)
        self.wait(
            lambda: not any(self.domains_everywhere().values()), "domains left by earlier tests"
        )

    def report(self) -> str:
        """Views, domains and pools of every agent, for assertion messages."""
        lines = [describe_views(self.kind, self.testbed.hosts)]
        for host in self.testbed.hosts:
            with contextlib.suppress(AgentNotReady, OSError):
                pools = self.get(host, "/v1/pools")
                lines.append(f"{host.name}: domains {self.domains(host)} pools {pools}")
        return "\n".join(lines)

    # -- pools ---------------------------------------------------------------------------------
    def running(self, host: Host, pool: str) -> dict[str, Any] | None:
        """The pool's status if it is running (for ``wait``), else None."""
        status = self.status(host, pool)
        return status if running_under(status) else None

    def submit(self, host: Host, text: str, name: str) -> dict[str, Any]:
        status, body = self.call(host, "POST", "/v1/pools", {"descriptor": text, "name": name})
        assert status == 201, f"submit {name} at {host}: {status} {body}"
        return dict(body)

    def terminate_everything(self, pools: Sequence[str], via: Host | None = None) -> None:
        """Terminate ``pools`` and wait until no host runs any of their VMs."""
        via = via or self.members[0]
        for pool in pools:
            status, body = self.call(via, "DELETE", f"/v1/pools/{pool}")
            assert status in (202, 404), f"terminate {pool}: {status} {body}"
        hosts = [
            h for h in self.testbed.hosts if self.procs.get(h.name) and self.procs[h.name].alive()
        ]
        self.wait(
            lambda: (
                not any(
                    d for ds in self.domains_everywhere(hosts).values() for d in ds if _of(d, pools)
                )
            ),
            f"VMs of {list(pools)} left after terminate",
        )


def _quietly(fn: Callable[[Host], None]) -> Callable[[Host], None]:
    def run(host: Host) -> None:
        with contextlib.suppress(AgentNotReady, OSError):
            fn(host)

    return run


def _of_any(domains: list[str], pool: str) -> list[str]:
    return [d for d in domains if _of(d, [pool])]


def _of(domain: str, pools: Sequence[str]) -> bool:
    return any(domain.startswith(f"sdm-{pool}-") for pool in pools)


@pytest.fixture(scope="module")
def pool_mesh(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolMesh]:
    testbed = open_testbed(MESH_SIZE + 1, tmp_path_factory)
    kind = PoolAgents(testbed)
    try:
        reason = kind.unavailable()
        if reason:
            pytest.skip(reason)
        mesh = PoolMesh(testbed, kind)
        mesh.start(mesh.members[0], [])
        wait_answering(kind, mesh.members[:1], timeout=TIMEOUT)
        for host in mesh.members[1:]:
            mesh.start(host, mesh.members[:1])
        yield mesh
    finally:
        kind.close()
        close_testbed(testbed)


@pytest.fixture
def mesh(pool_mesh: PoolMesh) -> PoolMesh:
    pool_mesh.restore()
    return pool_mesh


# --- descriptors -----------------------------------------------------------------------------


def pool_text(
    count: int, *, memory: int = 256, restart: str = "always", parallel: bool = True
) -> str:
    """``count`` VMs, each with its own qcow2 disk; a Parallel boots them side by side, a
    Compound one after the other."""
    vms = "\n".join(
        f"""        sd{i} extends Compound {{
            sfSyncTerminate true;
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory {memory}; restart "{restart}"; hostname "vm{i}";
                storageBackend LAZY ATTRIB disk;
            }}
        }}"""
        for i in range(count)
    )
    container = "Parallel {\n        asynchCreateChild true;" if parallel else "Compound {"
    return (
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/combinators/parallel.sf"\n'
        f"sfConfig extends Compound {{\n    pool extends {container}\n{vms}\n    }}\n}}\n"
    )


def vm_hosts(status: dict[str, Any]) -> dict[str, str]:
    """VM component path -> the host status says it runs on."""
    return {c["path"]: c["host"] for c in status["components"] if c.get("domain")}


def running_under(status: dict[str, Any], shepherd: str | None = None) -> bool:
    return status["state"] == "running" and (shepherd is None or status["shepherd"] == shepherd)


def copies(found: dict[str, list[str]], pool: str) -> Counter[str]:
    """How many hosts run each VM domain of ``pool``."""
    return Counter(d for ds in found.values() for d in ds if _of(d, [pool]))


class DomainWatch(threading.Thread):
    """Every host's domains of one pool, sampled every 0.2 s while a host is cut: VMs on two
    hosts at once, the cut host starting anything, when it stopped what it ran, and when
    every VM ran elsewhere."""

    def __init__(self, mesh: PoolMesh, pool: str, victim: Host, before: set[str]) -> None:
        super().__init__(daemon=True)
        self.mesh, self.pool, self.victim, self.before = mesh, pool, victim, before
        self.problems: list[str] = []
        self.samples = 0
        self.fenced_at = float("nan")
        self._last: dict[str, list[str]] = {}
        self._moved: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(AgentNotReady):
                found = self.mesh.domains_everywhere()
                now = time.monotonic()
                self.samples += 1
                self._last = found
                twice = {d: n for d, n in copies(found, self.pool).items() if n > 1}
                if twice:
                    self.problems.append(f"VMs on two hosts at once: {twice}")
                kept = self.kept()
                if kept - self.before:  # sampled: never the placeholder
                    self.problems.append(f"{self.victim} started {kept - self.before} while cut")
                if not kept and self.fenced_at != self.fenced_at:  # still NaN: first time
                    self.fenced_at = now
                elsewhere = copies(
                    {h: d for h, d in found.items() if h != self.victim.name}, self.pool
                )
                self._moved.setdefault(sum(elsewhere.values()), now)
            self._halt.wait(0.2)

    def kept(self) -> set[str]:
        """The pool's VMs the cut host still has (unknown before the first sample)."""
        if self.victim.name not in self._last:
            return {"(not sampled yet)"}
        return set(copies({self.victim.name: self._last[self.victim.name]}, self.pool))

    def moved_at(self, count: int) -> float:
        return self._moved.get(count, float("nan"))

    def check(self) -> None:
        assert not self.problems, f"{self.problems[:3]}\n{self.mesh.report()}"

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# --- tests -----------------------------------------------------------------------------------


def test_tutorial_pool_spreads_and_every_agent_agrees(mesh: PoolMesh) -> None:
    a = mesh.members[0]
    demo = str(DESCRIPTORS / "examples" / "demoPool.sf")
    plan = json.loads(mesh.cli(a, "submit", demo, "--name", "demo", "--dry-run", "--json"))
    assert {item["host"] for item in plan["placement"]} <= set(SIZES)
    out = mesh.cli(a, "submit", demo, "--name", "demo", "--wait")
    assert "pool demo running" in out, out
    # Spread: the three VMs on three different hosts, each running there and only there.
    status = mesh.status(a, "demo")
    placed = vm_hosts(status)
    assert len(placed) == 3 and len(set(placed.values())) == 3, placed
    found = mesh.domains_everywhere()
    for component in status["components"]:
        if component["domain"]:
            where = [h for h, ds in found.items() if component["domain"] in ds]
            assert where == [component["host"]], (component, found)
    # `sdmesh status demo --json` says the same on all five agents.
    answers: dict[str, Any] = {}

    def ask(host: Host) -> None:
        answers[host.name] = json.loads(mesh.cli(host, "status", "demo", "--json"))

    threads = [threading.Thread(target=ask, args=(h,)) for h in mesh.members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == sorted(SIZES)
    first = answers[a.name]
    assert first["state"] == "running" and first["shepherd"] in SIZES
    for name, answer in answers.items():
        for key in ("pool", "state", "shepherd", "generation", "components"):
            assert answer[key] == first[key], (name, key, answer[key], first[key])
    mesh.terminate_everything(["demo"], via=mesh.members[4])


def test_shepherd_killed_mid_deploy_a_new_one_finishes_and_nothing_runs_twice(
    mesh: PoolMesh,
) -> None:
    count, a = 6, mesh.members[0]
    text = pool_text(count, parallel=False)  # a Compound: one VM after the other
    shepherd = mesh.host(str(shepherd_of("ha", SIZES)))
    plan = mesh.call(a, "POST", "/v1/pools", {"descriptor": text, "name": "ha", "dry_run": True})[1]
    hosts = [item["host"] for item in plan["placement"]]
    # Hold the deploy part way, deterministically: the shepherd cannot reach the host of a
    # middle VM (the others still can, so nobody is declared dead), and the Compound waits.
    stall = next(i for i, h in enumerate(hosts) if i >= 2 and h != shepherd.name)
    blocked = mesh.host(hosts[stall])
    mesh.testbed.partition([shepherd], [blocked])
    mesh.submit(a, text, "ha")

    def part_way() -> dict[str, Any] | None:
        status = mesh.status(a, "ha")
        done = [c for c in status["components"] if c["state"] in ("deployed", "running")]
        return status if len(done) >= 2 * stall else None  # a disk and a VM per unit

    first = mesh.wait(part_way, "the deploy never got part way")
    assert first["state"] == "deploying" and first["shepherd"] == shepherd.name, first
    mesh.testbed.kill(mesh.procs[shepherd.name])  # kill -9, in the middle of the deploy
    mesh.testbed.heal_partitions()
    survivors = [h for h in mesh.members if h != shepherd]

    def converged() -> dict[str, Any] | None:
        found = copies(mesh.domains_everywhere(survivors), "ha")
        twice = {domain: n for domain, n in found.items() if n > 1}
        assert not twice, f"VMs running on several hosts at once: {twice}\n{mesh.report()}"
        status = mesh.status(survivors[0], "ha")
        done = running_under(status) and status["shepherd"] != shepherd.name
        return status if done and sum(found.values()) == count else None

    status = mesh.wait(converged, "ha never ran under a new shepherd", timeout=90)
    assert int(status["generation"]) > int(first["generation"])
    assert shepherd.name not in vm_hosts(status).values()
    mesh.terminate_everything(["ha"], via=survivors[-1])


@pytest.mark.parametrize("whose", ["a host", "the shepherd"])
def test_partitioned_host_its_vms_move_and_the_stale_copies_go_after_the_heal(
    mesh: PoolMesh, whose: str
) -> None:
    count, a, pool = 6, mesh.members[0], "cut-" + whose.split()[-1]
    mesh.submit(a, pool_text(count), pool)
    status = mesh.wait(lambda: mesh.running(a, pool), f"{pool} never ran")
    placed = vm_hosts(status)
    if whose == "the shepherd":  # it runs VMs too: six VMs spread over five hosts
        victim = mesh.host(status["shepherd"])
    else:
        victim = mesh.host(next(h for h in placed.values() if h != status["shepherd"]))
    others = [h for h in mesh.members if h != victim]
    before = set(mesh.domains(victim))
    assert before
    cut_at = time.monotonic()
    mesh.testbed.cut(victim)
    # Leases (docs/ha.md): the cut host stops its restartable VMs (it cannot renew its lease)
    # before the connected side may rebuild them: never two copies, on any host. Sampled
    # on its own thread, every 0.2 s: a status call can wait for the cut shepherd (10 s).
    watch = DomainWatch(mesh, pool, victim, before)
    watch.start()
    try:

        def moved() -> dict[str, Any] | None:
            watch.check()
            found = mesh.domains_everywhere(others)
            s = mesh.status(others[0], pool)
            done = running_under(s) and victim.name not in vm_hosts(s).values()
            kept = watch.kept()
            return s if done and not kept and sum(copies(found, pool).values()) == count else None

        moved_status = mesh.wait(moved, "the cut host's VMs never moved", timeout=90)
        print(
            f"\n{pool}: cut -> {victim} stopped its VMs {watch.fenced_at - cut_at:.1f} s; "
            f"cut -> all {count} VMs running elsewhere {watch.moved_at(count) - cut_at:.1f} s; "
            f"{watch.samples} samples, overlap 0"
        )
        # Long enough alone for the cut host to declare everyone else dead: with no majority
        # in its view it must not take the pool over (it would boot every VM a second time).
        cut_off = mesh.wait(
            lambda: all(mesh.kind.members(victim).get(h.name) == MemberState.DEAD for h in others),
            f"{victim} never gave up on the others",
        )
        assert cut_off
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            moved()
            time.sleep(0.3)
    finally:
        watch.stop()
    watch.check()
    assert int(moved_status["generation"]) > int(status["generation"])
    mesh.testbed.heal(victim)

    def healed() -> bool:
        found = mesh.domains_everywhere()
        everywhere = copies(found, pool)
        s = mesh.status(victim, pool)
        return (
            running_under(s)
            and sorted(everywhere.values()) == [1] * count
            and not (set(found[victim.name]) & before)
        )

    mesh.wait(healed, "the stale copies were never released after the heal", timeout=90)
    # ...and stay released: each VM once, on the hosts status names.
    final = mesh.status(a, pool)
    found = mesh.domains_everywhere()
    for component in final["components"]:
        if component["domain"]:
            assert [h for h, ds in found.items() if component["domain"] in ds] == [
                component["host"]
            ]
    mesh.terminate_everything([pool])


def test_three_pools_submitted_at_once_onto_tight_capacity_never_overcommit(
    mesh: PoolMesh,
) -> None:
    memory, per_pool = 1536, 5  # 15 VMs of 1.5 GiB; the five hosts hold 12 (1+2+2+3+4)
    pools = ["tight-a", "tight-b", "tight-c"]
    text = pool_text(per_pool, memory=memory, restart="never")
    submitters = mesh.members[:3]
    start = threading.Barrier(len(pools))
    answers: dict[str, tuple[int, Any]] = {}

    def submit(pool: str, host: Host) -> None:
        start.wait()
        answers[pool] = mesh.call(host, "POST", "/v1/pools", {"descriptor": text, "name": pool})

    threads = [
        threading.Thread(target=submit, args=(pool, host))
        for pool, host in zip(pools, submitters, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 201 for status, _ in answers.values()), answers

    def settled() -> list[dict[str, Any]] | None:
        for name, domains in mesh.domains_everywhere().items():
            used = len([d for d in domains if _of(d, pools)]) * memory
            assert used <= SIZES[name][1], f"{name} overcommitted: {domains}\n{mesh.report()}"
        statuses = [mesh.status(mesh.members[4], pool) for pool in pools]
        final = all(s["state"] in ("running", "failed", "terminated") for s in statuses)
        return statuses if final else None

    statuses = mesh.wait(settled, "the three pools never settled", timeout=90)
    running = [s["pool"] for s in statuses if s["state"] == "running"]
    assert running, f"no pool runs: {statuses}"

    # A running pool has all its VMs, once each; a failed one left nothing behind.
    def consistent() -> bool:
        found = mesh.domains_everywhere()
        for name, domains in found.items():
            used = len([d for d in domains if _of(d, pools)]) * memory
            assert used <= SIZES[name][1], f"{name} overcommitted: {domains}"
        return all(
            sorted(copies(found, pool).values()) == ([1] * per_pool if pool in running else [])
            for pool in pools
        )

    mesh.wait(consistent, "running pools incomplete or failed ones not cleaned up")
    mesh.terminate_everything(pools)


def test_terminate_from_an_agent_that_joined_after_the_submission(mesh: PoolMesh) -> None:
    a, newcomer = mesh.members[0], mesh.spare
    mesh.submit(a, pool_text(4, restart="never"), "late")
    mesh.wait(lambda: mesh.running(a, "late"), "late never ran")
    mesh.start(newcomer, [mesh.members[2]])
    everyone = [*mesh.members, newcomer]
    mesh.ready(everyone)
    status, body = mesh.call(newcomer, "DELETE", "/v1/pools/late")
    assert status == 202, body

    def gone() -> bool:
        found = mesh.domains_everywhere(everyone)
        return not copies(found, "late") and mesh.status(a, "late")["state"] == "terminated"

    mesh.wait(gone, "the pool was not torn down everywhere")
    assert mesh.procs[newcomer.name].stop(timeout=30) == 0  # SIGTERM: it leaves gracefully


def test_leave_hands_the_shepherds_pools_to_its_successor_and_they_stay_managed(
    mesh: PoolMesh,
) -> None:
    a, text = mesh.members[0], pool_text(3, restart="never")
    names = [h.name for h in mesh.members]
    # A pool whose shepherd runs none of its VMs: the test driver's VMs live in the agent's
    # process, and what is checked here is that the others' VMs are left alone.
    for pool in (f"keep-{i}" for i in range(20)):
        plan = mesh.call(
            a, "POST", "/v1/pools", {"descriptor": text, "name": pool, "dry_run": True}
        )
        if plan[1]["shepherd"] not in {item["host"] for item in plan[1]["placement"]}:
            break
    mesh.submit(a, text, pool)
    before = mesh.wait(lambda: mesh.running(a, pool), f"{pool} never ran")
    leaver = mesh.host(before["shepherd"])
    successor = successors(pool, names, leaver.name)[0]
    stayers = [h for h in mesh.members if h != leaver]
    domains = {h: _of_any(d, pool) for h, d in mesh.domains_everywhere(stayers).items()}

    mesh.cli(leaver, "leave")  # `sdmesh leave`: hand the pools over, then leave
    assert mesh.procs[leaver.name].popen.wait(timeout=60) == 0
    log = mesh.procs[leaver.name].log()
    assert f"pool {pool}: handed over to {successor}" in log, log[-3000:]

    def managed_by_the_successor() -> list[dict[str, Any]] | None:
        statuses = [mesh.status(h, pool) for h in stayers]
        return statuses if all(running_under(s, successor) for s in statuses) else None

    statuses = mesh.wait(managed_by_the_successor, f"{successor} never showed as the shepherd")
    for status in statuses:  # every remaining agent says the same
        for key in ("state", "shepherd", "generation", "components"):
            assert status[key] == statuses[0][key], (key, status, statuses[0])
    assert int(statuses[0]["generation"]) > int(before["generation"])
    assert vm_hosts(statuses[0]) == vm_hosts(before)  # nothing moved...
    now = {h: _of_any(d, pool) for h, d in mesh.domains_everywhere(stayers).items()}
    assert now == domains  # ...nor was restarted elsewhere
    # Still managed: terminate from an agent that is not the successor.
    via = next(h for h in stayers if h.name != successor)
    status, body = mesh.call(via, "DELETE", f"/v1/pools/{pool}")
    assert status == 202, body
    mesh.wait(
        lambda: (
            mesh.status(via, pool)["state"] == "terminated"
            and not copies(mesh.domains_everywhere(stayers), pool)
        ),
        f"{pool} was not torn down after the leave",
    )
