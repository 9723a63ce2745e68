"""A 1,000-VM pool over 20 real agents on the test driver, and HA time at N = 10.

sdmesh side: N ``sdmesh join`` processes on loopback, each its own simulated test-driver
host; a generated pool (a Parallel with asynchCreateChild of VMs, each with ``restart
"always"``) is submitted to one agent; we time submit until every VM runs (as the pool's
status says, checked against the domains every agent's libvirt really holds), and terminate
until every domain is gone.

Baseline, same run: the floor of the same libvirt calls made directly in one process, spread
over N fresh simulated hosts (defineXML + create per VM, then destroy + undefine), with the
domain XML sdmesh's driver builds for such a VM.

HA (``--ha``): kill -9 the agent holding the most VMs and time until the pool's status shows
every VM running again on the survivors.

Host identities (``--identities``): the same deploy and terminate again in the same run on a
mesh whose hosts hold certificates from a cluster CA, so every membership claim, pool record
and pool or tombstone rumor is signed and checked (docs/security.md); printed next to the
run without them.

    .venv/bin/python bench/pool_mesh.py [--agents 20] [--vms 1000] [--ha-agents 10] [--identities]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from integration.agent.test_agent_loopback import Mesh
from integration.agent.test_identity_loopback import IdentityMesh

from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.testing.api import trusted_operator_env

CPUS, MEMORY = 64, 256 * 1024


def pool_text(count: int) -> str:
    vms = "\n".join(
        f'        vm{i} extends KvmDomain {{ memory 64; restart "always"; hostname "vm{i}"; '
        'kernel "/boot/vmlinuz"; }'
        for i in range(count)
    )
    return (
        '#include "org/smartfrog/components.sf"\n'
        '#include "ch/cern/openlab/smartdomains/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/combinators/parallel.sf"\n'
        "sfConfig extends Compound {\n    pool extends Parallel {\n"
        f"        asynchCreateChild true;\n{vms}\n    }}\n}}\n"
    )


def api(mesh: Mesh, name: str, method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        mesh.url(name) + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **mesh.headers()},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def start_mesh(root: Path, count: int, identities: bool = False) -> Mesh:
    """``count`` agents; with ``identities``, each enrolled under a fresh cluster CA."""
    mesh: Mesh = IdentityMesh(root) if identities else Mesh(root)
    names = [f"a{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        host = root / f"{name}.xml"
        write_simulated_host(host, cpus=CPUS, memory_mib=MEMORY)
        mesh.hypervisors[name] = f"test://{host}"
        if isinstance(mesh, IdentityMesh):
            mesh.enrol(name)
            mesh.env[name] = {"SDMESH_IDENTITY_CA": str(mesh.ca_dir / "ca.pub")}
        mesh.start(name, names[0] if i else None)
    mesh.wait(
        lambda: all(sum(1 for s in mesh.view(n).values() if s == "alive") == count for n in names),
        120,
        "the mesh never formed",
    )
    time.sleep(2.0)  # capacity metadata gossiped, DHT contacts made
    return mesh


def domains(mesh: Mesh, names: list[str]) -> int:
    total = 0
    for name in names:
        health = mesh.api(name, "/v1/health")
        assert isinstance(health, dict)
        total += len(health.get("domains", []))
    return total


def pool_state(mesh: Mesh, name: str, pool: str) -> tuple[str, int]:
    status = api(mesh, name, "GET", f"/v1/pools/{pool}")
    assert isinstance(status, dict)
    running = sum(1 for c in status["components"] if c["domain"] and c["state"] == "running")
    return str(status["state"]), running


def run_sdmesh(agents: int, vms: int, identities: bool = False) -> tuple[float, float]:
    from sdmesh.language import resolve_text
    from sdmesh.pools.submission import request_body

    with tempfile.TemporaryDirectory() as tmp:
        mesh = start_mesh(Path(tmp), agents, identities)
        names = list(mesh.ports)
        try:
            body = request_body(resolve_text(pool_text(vms), "bench.sf"), "bench")
            start = time.monotonic()
            api(mesh, names[0], "POST", "/v1/pools", body)
            mesh.wait(lambda: pool_state(mesh, names[0], "bench") == ("running", vms), 300, "slow")
            deployed = time.monotonic() - start
            assert domains(mesh, names) == vms
            start = time.monotonic()
            api(mesh, names[-1], "DELETE", "/v1/pools/bench")
            mesh.wait(lambda: domains(mesh, names) == 0, 300, "terminate too slow")
            gone = time.monotonic() - start
        finally:
            mesh.stop()
    return deployed, gone


def run_raw(agents: int, vms: int) -> tuple[float, float]:
    """The floor: the same define + create, then destroy + undefine, in one process."""
    silence_libvirt_stderr()
    xml = (
        "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        conns = []
        for i in range(agents):
            host = Path(tmp) / f"h{i}.xml"
            write_simulated_host(host, cpus=CPUS, memory_mib=MEMORY)
            conns.append(libvirt.open(f"test://{host}"))
        start = time.monotonic()
        created = []
        for i in range(vms):
            conn = conns[i % agents]
            domain = conn.defineXML(xml.format(name=f"vm{i}"))
            domain.create()
            created.append(domain)
        deployed = time.monotonic() - start
        start = time.monotonic()
        for domain in created:
            domain.destroy()
            domain.undefine()
        gone = time.monotonic() - start
        for conn in conns:
            conn.close()
    return deployed, gone


def run_ha(agents: int, vms: int) -> float:
    from sdmesh.language import resolve_text
    from sdmesh.pools.submission import request_body

    with tempfile.TemporaryDirectory() as tmp:
        mesh = start_mesh(Path(tmp), agents)
        names = list(mesh.ports)
        try:
            body = request_body(resolve_text(pool_text(vms), "ha.sf"), "ha")
            api(mesh, names[0], "POST", "/v1/pools", body)
            mesh.wait(lambda: pool_state(mesh, names[0], "ha") == ("running", vms), 120, "slow")
            status = api(mesh, names[0], "GET", "/v1/pools/ha")
            assert isinstance(status, dict)
            hosts = [c["host"] for c in status["components"] if c["domain"]]
            shepherd = status["shepherd"]
            victim = max((n for n in names if n not in (shepherd, names[0])), key=hosts.count)
            start = time.monotonic()
            mesh.procs[victim].kill()

            def healed() -> bool:
                s = api(mesh, names[0], "GET", "/v1/pools/ha")
                assert isinstance(s, dict)
                placed = [c for c in s["components"] if c["domain"]]
                return all(c["state"] == "running" and c["host"] != victim for c in placed)

            mesh.wait(healed, 120, "never healed")
            return time.monotonic() - start
        finally:
            mesh.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--ha-agents", type=int, default=10)
    parser.add_argument("--ha-vms", type=int, default=50)
    parser.add_argument(
        "--runs", type=int, default=1, help="sdmesh runs one after another (all must succeed)"
    )
    parser.add_argument(
        "--identities",
        action="store_true",
        help="also run the deploy on a mesh with host identities (signed claims and records)",
    )
    args = parser.parse_args()
    # Hosts run only what a trusted operator signed: the agents trust one bench operator and
    # sign the bench's (unsigned) submissions with its key, as the test suite's agents do.
    work = tempfile.TemporaryDirectory(prefix="sdmesh-bench-operator-")
    os.environ.update(trusted_operator_env(Path(work.name)))
    # No fence guard runs on loopback: say so, or no restartable VM would start.
    os.environ.setdefault("SDMESH_FENCE_GUARD_SOCKET", "")
    raw_up, raw_down = run_raw(args.agents, args.vms)
    times: list[tuple[float, float]] = []
    failures: list[str] = []
    for run in range(args.runs):
        try:
            up_time, down_time = run_sdmesh(args.agents, args.vms)
            times.append((up_time, down_time))
            outcome = f"submit -> all running {up_time:.2f}s, terminate {down_time:.2f}s"
        except Exception as error:  # a failed run is reported, and the next one starts
            failures.append(f"run {run + 1}: {error}")
            outcome = f"FAILED: {error}"
        if args.runs > 1:
            print(f"run {run + 1}/{args.runs}: {outcome}", flush=True)
    if args.runs > 1:
        ups = sorted(t[0] for t in times)
        print(
            f"{len(times)}/{args.runs} runs succeeded; submit -> all running min "
            f"{ups[0]:.2f}s, median {ups[len(ups) // 2]:.2f}s, max {ups[-1]:.2f}s"
            if ups
            else f"0/{args.runs} runs succeeded"
        )
        for failure in failures:
            print(f"  {failure}")
    if not times:
        raise SystemExit(1)
    up, down = times[-1]
    print(f"{args.vms} VMs over {args.agents} agents (test driver)")
    print(f"{'':24}{'sdmesh':>10}{'raw libvirt':>14}{'ratio':>8}")
    print(f"{'submit -> all running':24}{up:>9.2f}s{raw_up:>13.2f}s{up / raw_up:>8.1f}")
    print(f"{'terminate -> all gone':24}{down:>9.2f}s{raw_down:>13.2f}s{down / raw_down:>8.1f}")
    print(f"{'end to end':24}{up + down:>9.2f}s{raw_up + raw_down:>13.2f}s")
    if args.identities:
        id_up, id_down = run_sdmesh(args.agents, args.vms, identities=True)
        print(f"{'with host identities':24}{'identities':>10}{'without':>14}{'ratio':>8}")
        print(f"{'submit -> all running':24}{id_up:>9.2f}s{up:>13.2f}s{id_up / up:>8.2f}")
        print(f"{'terminate -> all gone':24}{id_down:>9.2f}s{down:>13.2f}s{id_down / down:>8.2f}")
    if args.ha_agents:
        ha = run_ha(args.ha_agents, args.ha_vms)
        print(
            f"HA, N = {args.ha_agents}, {args.ha_vms} VMs: kill -9 of a host -> its VMs "
            f"running elsewhere in {ha:.2f}s"
        )


if __name__ == "__main__":
    main()
