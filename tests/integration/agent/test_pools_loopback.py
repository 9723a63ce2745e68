"""Pools across real `sdmesh join` processes on loopback, each an isolated test-driver host.

Submit to one agent, watch every agent agree, kill hosts, terminate from elsewhere. The
network-namespace versions (partitions with nft) are in tests/integration/netns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from sdmesh.hypervisor.simulated_host import write_simulated_host

from .test_agent_loopback import Mesh

DESCRIPTORS = Path(__file__).resolve().parents[3] / "descriptors"


class PoolMesh(Mesh):
    def start_host(self, name: str, seed: str | None, cpus: int, memory_mib: int) -> None:
        host = self.root / f"{name}-host.xml"
        write_simulated_host(host, cpus=cpus, memory_mib=memory_mib)
        self.hypervisors[name] = f"test://{host}"
        self.start(name, seed)

    def cli(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("submit",) and "--dry-run" not in args:
            self.wait_for_leases()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sdmesh",
                *args,
                "--agent",
                self.agent(name),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"sdmesh {' '.join(args)}: rc={done.returncode}\n{done.stderr}")
        return done

    def wait_for_leases(self) -> None:
        """Until every running agent holds its lease: a host that just joined refuses
        restartable VMs for a second or two (docs/ha.md), and its units would go elsewhere,
        which tests of placement do not expect."""

        def held(name: str) -> bool:
            health = self.api(name, "/v1/health")
            lease = health.get("lease") if isinstance(health, dict) else None
            return lease is None or bool(lease.get("held"))

        running = [name for name, proc in self.procs.items() if proc.poll() is None]
        self.wait(lambda: all(held(name) for name in running), 30, "leases never held")

    def status(self, name: str, pool: str) -> dict[str, object]:
        request = urllib.request.Request(
            self.url(name) + f"/v1/pools/{pool}", headers=self.headers()
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return dict(json.loads(r.read()))

    def domains(self, name: str) -> list[str]:
        """Domains really defined on a host (virsh on its test:// URI is per process, so ask
        the agent's own view: its status of every pool it hosts is not enough; use libvirt
        through the agent's health endpoint instead)."""
        found = self.api(name, "/v1/health")
        assert isinstance(found, dict)
        return list(found.get("domains", []))


def five_hosts(mesh: PoolMesh) -> list[str]:
    names = [f"n{i}" for i in range(5)]
    for i, name in enumerate(names):
        mesh.start_host(name, names[0] if i else None, cpus=4 + 2 * i, memory_mib=2048 + 1024 * i)
    mesh.wait(
        lambda: all(len([s for s in mesh.view(n).values() if s == "alive"]) == 5 for n in names),
        30,
        "the five agents never agreed",
    )
    return names


def test_submit_to_one_agent_status_agrees_everywhere_terminate_from_another(
    pool_mesh: PoolMesh,
) -> None:
    names = five_hosts(pool_mesh)
    demo = str(DESCRIPTORS / "examples" / "demoPool.sf")
    plan = json.loads(pool_mesh.cli("n1", "submit", demo, "--dry-run", "--json").stdout)
    assert all(item["host"] in names for item in plan["placement"])
    done = pool_mesh.cli("n1", "submit", demo, "--name", "demo", "--wait")
    assert "pool demo running" in done.stdout
    statuses = [pool_mesh.status(name, "demo") for name in names]
    assert {s["state"] for s in statuses} == {"running"}
    assert len({json.dumps(s, sort_keys=True) for s in statuses}) == 1
    hosts = {c["host"] for c in statuses[0]["components"] if c["domain"]}  # type: ignore[index,union-attr]
    assert len(hosts) == 3  # spread: three VMs, three hosts
    pool_mesh.cli("n4", "terminate", "demo", "--wait")
    for name in names:
        assert pool_mesh.domains(name) == []


def pool_file(root: Path, count: int, *, memory: int = 256, restart: str = "always") -> str:
    vms = "\n".join(
        f"""        sd{i} extends Compound {{
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory {memory}; restart "{restart}"; storageBackend LAZY ATTRIB disk;
            }}
        }}"""
        for i in range(count)
    )
    path = root / f"pool{count}x{memory}.sf"
    path.write_text(
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/combinators/parallel.sf"\n'
        "sfConfig extends Compound {\n    pool extends Parallel {\n        asynchCreateChild true;\n"
        f"{vms}\n    }}\n}}\n"
    )
    return str(path)


def vm_hosts(status: dict[str, object]) -> dict[str, str]:
    components = status["components"]
    assert isinstance(components, list)
    return {c["path"]: c["host"] for c in components if c["domain"]}


def test_kill_9_the_shepherd_then_a_host_the_pool_heals(pool_mesh: PoolMesh) -> None:
    names = five_hosts(pool_mesh)
    descriptor = pool_file(pool_mesh.root, 8)
    pool_mesh.cli("n0", "submit", descriptor, "--name", "ha", "--wait")
    shepherd = str(pool_mesh.status("n0", "ha")["shepherd"])
    pool_mesh.procs[shepherd].kill()  # kill -9
    alive = [n for n in names if n != shepherd]
    pool_mesh.wait(
        lambda: pool_mesh.status(alive[0], "ha")["shepherd"] not in ("", shepherd),
        30,
        "no new shepherd took over",
    )
    pool_mesh.wait(
        lambda: (
            (s := pool_mesh.status(alive[0], "ha"))["state"] == "running"
            and shepherd not in vm_hosts(s).values()
            and int(str(s["generation"])) > 1
        ),
        60,
        "the pool never came back to running under the new shepherd",
    )
    placed = vm_hosts(pool_mesh.status(alive[0], "ha"))
    domains = [d for n in alive for d in pool_mesh.domains(n)]
    assert len(domains) == len(set(domains)) == 8  # each VM once, none lost
    assert set(placed.values()) <= set(alive)
    pool_mesh.cli(alive[-1], "terminate", "ha", "--wait")
    pool_mesh.wait(
        lambda: all(pool_mesh.domains(n) == [] for n in alive), 30, "VMs left after terminate"
    )


def test_concurrent_submissions_onto_tight_capacity_never_overcommit(pool_mesh: PoolMesh) -> None:
    names = [f"t{i}" for i in range(3)]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=2, memory_mib=1024)
    pool_mesh.wait(
        lambda: all(len(pool_mesh.view(n)) == 3 for n in names), 30, "the three never agreed"
    )
    files = [pool_file(pool_mesh.root, 3 + i, memory=256, restart="never") for i in range(3)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdmesh",
                "submit",
                f,
                "--name",
                f"p{i}",
                "--agent",
                pool_mesh.agent(names[i]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, f in enumerate(files)
    ]
    for proc in procs:
        proc.wait(timeout=60)

    def settled() -> bool:
        return all(
            pool_mesh.status(names[0], f"p{i}")["state"] in ("running", "failed", "terminated")
            for i in range(3)
        )

    pool_mesh.wait(settled, 60, "the pools never settled")
    for name in names:
        # 1 GiB hosts hold at most four 256 MiB VMs: the host admits, never the shepherd alone.
        assert len(pool_mesh.domains(name)) <= 4, (name, pool_mesh.domains(name))


def test_leave_of_the_shepherd_hands_its_pool_over(pool_mesh: PoolMesh) -> None:
    from sdmesh.pools.ownership import successors

    names = [f"l{i}" for i in range(3)]
    for i, name in enumerate(names):
        pool_mesh.start_host(name, names[0] if i else None, cpus=4, memory_mib=4096)
    pool_mesh.wait(
        lambda: all(len(pool_mesh.view(n)) == 3 for n in names), 30, "the three never agreed"
    )
    pool_mesh.cli("l0", "submit", pool_file(pool_mesh.root, 2, restart="never"), "--name", "lv")
    pool_mesh.wait(lambda: pool_mesh.status("l0", "lv")["state"] == "running", 30, "lv never ran")
    before = pool_mesh.status("l0", "lv")
    leaver = str(before["shepherd"])
    successor = successors("lv", names, leaver)[0]
    stayers = [n for n in names if n != leaver]
    pool_mesh.cli(leaver, "leave")
    assert pool_mesh.procs[leaver].wait(timeout=30) == 0
    log = (pool_mesh.root / f"{leaver}.log").read_text()
    assert f"pool lv: handed over to {successor}" in log, log[-2000:]
    pool_mesh.wait(
        lambda: all(
            (s := pool_mesh.status(n, "lv"))["state"] == "running" and s["shepherd"] == successor
            for n in stayers
        ),
        30,
        f"{successor} never showed as the shepherd of lv",
    )
    after = pool_mesh.status(stayers[0], "lv")
    assert int(str(after["generation"])) > int(str(before["generation"]))
    assert vm_hosts(after) == vm_hosts(before)  # the leaver's VMs stay in the pool
    via = next(n for n in stayers if n != successor)
    pool_mesh.cli(via, "terminate", "lv", "--wait")
    for name in stayers:
        assert not [d for d in pool_mesh.domains(name) if d.startswith("sdm-lv-")]
