"""Issue 12 on real agents in network namespaces: a rogue holding the cluster key, and no
certificate the mesh's CA signed, changes nothing, and every refusal is counted.

Three agents (h0, h1, h2: "a", "b", "c") run with host identities and a simulated hypervisor
each, and two signed pools (``demo``: three VMs, ``tomb``: one). The rogue (sdmesh.testing.rogue)
runs on a fourth host of the same bridge, so the addresses its streams come from are its own,
as a real attacker's would be: it cannot pass for a member by address, which a loopback test
(every agent on 127.0.0.1) could not show. It tries, in order:

1. to join as h1: refused (unsigned, or under a certificate it made itself), h1's address
   does not flap and h1 stays alive;
2. leaf orders for ``demo`` from itself and sealed as from the real shepherd, and the other
   RPCs that speak for a member (submit, hand-over, inventory, reports): refused;
3. terminations and rumors with generations 2^62, 2^64-1, -1 and 1.5, and a rumor at the
   largest Lamport time: refused, and the name they aimed at is submitted afterwards as usual
   (no 500, no poisoned name, no exhausted rumor clock);
4. a descriptor under another's digest and an undecodable record, at the largest DHT
   version: no replica keeps them; forged pool records in the DHT (placement moved,
   shepherd mallory, a huge generation, state terminated), then ``kill -9`` of the shepherd: the successor takes the pool over
   from the genuine record, nothing rebuilt elsewhere, nothing twice;
5. tombstones and terminations at the pool's own generation, unsigned or with a garbage
   signature: the pool keeps running;
6. pool rumors within bounds (a running pool said terminated by mallory, a name never used
   said to exist): the pool runs on, the name can be submitted.

Every step reads ``sdmesh_mesh_refusals_total`` (``/metrics``) or the identity drops
(``/v1/health``) before and after, and checks the counter of its reason rose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.pools.ownership import shepherd as shepherd_of
from sdmesh.pools.ownership import successors
from sdmesh.pools.records import Order, PoolRecord, PoolSpec
from sdmesh.testing.agents import SdmeshAgent, wait_answering
from sdmesh.testing.api import socket_call
from sdmesh.testing.netns import Host, Proc, Testbed
from sdmesh.testing.pytest_netns import close_testbed, open_testbed
from sdmesh.testing.rogue import Rogue, run_in_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]

T = TypeVar("T")
PORT = 7946
TIMEOUT = 45.0
HUGE = (2**62, 2**64 - 1, -1, 1.5)
"""Generations no peer may send: far above any bound, past msgpack's int64, negative, a float."""


def pool_text(count: int) -> str:
    vms = "\n".join(
        f"""        sd{i} extends Compound {{
            sfSyncTerminate true;
            disk extends Qcow2OverlayBackend {{ baseImage "/img/base.qcow2"; }}
            vm extends KvmDomain {{
                memory 256; restart "always"; hostname "vm{i}";
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


class IdentityAgents(SdmeshAgent):
    """``sdmesh join`` with a host certificate from the test CA and a hypervisor each."""

    def __init__(self, testbed: Testbed) -> None:
        super().__init__(testbed, identities=True, extra_args=["--verbose"])
        self.uris = {
            host.name: write_simulated_host(
                testbed.workdir / f"{host.name}-hypervisor.xml", cpus=4, memory_mib=4096
            )
            for host in testbed.hosts
        }

    def start(self, host: Host, seeds: Sequence[Host], *, key: bytes | None = None) -> Proc:
        self.hypervisor = self.uris[host.name]
        return super().start(host, seeds, key=key)

    def _enrol(self, name: str, home: Path) -> Path:
        config = super()._enrol(name, home)
        with config.open("a") as out:  # no fence guard runs in the namespaces
            out.write('fence-guard-socket = ""\n')
        return config


@dataclass
class RogueMesh:
    testbed: Testbed
    kind: IdentityAgents
    procs: dict[str, Proc] = field(default_factory=dict)
    key_file: Path = Path()

    @property
    def members(self) -> list[Host]:
        return self.testbed.hosts[:3]

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.members]

    @property
    def rogue_host(self) -> Host:
        return self.testbed.hosts[3]

    def host(self, name: str) -> Host:
        return next(h for h in self.members if h.name == name)

    def alive_members(self) -> list[Host]:
        return [h for h in self.members if self.procs[h.name].alive()]

    # -- the agents' control API, over each one's socket ---------------------------------
    def call(self, host: Host, method: str, path: str, body: object = None) -> tuple[int, Any]:
        return socket_call(self.kind.socket_path(host), method, path, body, 15.0)

    def get(self, host: Host, path: str) -> Any:
        status, body = self.call(host, "GET", path)
        assert status == 200, f"GET {path} on {host}: {status} {body}"
        return body

    def status(self, host: Host, pool: str) -> dict[str, Any]:
        return dict(self.get(host, f"/v1/pools/{pool}"))

    def domains(self) -> dict[str, set[str]]:
        return {h.name: set(self.get(h, "/v1/health")["domains"]) for h in self.alive_members()}

    def pool_domains(self, pool: str) -> dict[str, set[str]]:
        return {
            h: {d for d in ds if d.startswith(f"sdm-{pool}-")} for h, ds in self.domains().items()
        }

    def peers(self, host: Host) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.get(host, "/v1/peers")}

    def refusals(self, host: Host) -> dict[str, float]:
        """``sdmesh_mesh_refusals_total`` by reason, and the identity refusals of /v1/health."""
        status, text = self.call(host, "GET", "/metrics")
        assert status == 200, text
        found: dict[str, float] = {}
        for line in str(text).splitlines():
            if line.startswith("sdmesh_mesh_refusals_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                found[reason] = float(line.rsplit(" ", 1)[1])
        drops = self.get(host, "/v1/health")["drops"]
        found.update(
            {
                k: float(v)
                for k, v in drops.items()
                if k.startswith("identity_") or k == "rumor_clock"
            }
        )
        return found

    def all_refusals(self) -> dict[str, dict[str, float]]:
        return {h.name: self.refusals(h) for h in self.alive_members()}

    def wait(self, condition: Callable[[], T], message: str, timeout: float = TIMEOUT) -> T:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, AssertionError, http.client.HTTPException):
                last = condition()
                if last:
                    return last
            time.sleep(0.3)
        raise AssertionError(f"{message} (after {timeout:.0f} s; last: {last})")

    def running(self, pool: str, hosts: Sequence[Host] | None = None) -> bool:
        return all(
            self.status(h, pool)["state"] == "running" for h in hosts or self.alive_members()
        )

    # -- the rogue -------------------------------------------------------------------------
    def rogue(self, work: Callable[[Rogue], Coroutine[Any, Any, T]]) -> T:
        """Run ``work(rogue)`` inside the rogue's host."""
        rogue = Rogue.from_key_file(self.key_file, bind=self.rogue_host.address)
        return run_in_netns(self.rogue_host.netns, lambda: work(rogue))

    @staticmethod
    def gossip(host: Host) -> tuple[str, int]:
        return (host.address, PORT)

    def dht_seeds(self) -> list[tuple[str, int]]:
        return [(h.address, PORT + 1) for h in self.alive_members()]

    def record(self, pool: str) -> PoolRecord:
        seeds = self.dht_seeds()
        found = self.rogue(lambda r: r.read_record(seeds, pool))
        assert found is not None, f"no record of {pool} in the DHT"
        return found


def rose(before: dict[str, float], after: dict[str, float], reason: str) -> float:
    return after.get(reason, 0.0) - before.get(reason, 0.0)


@pytest.fixture(scope="module")
def mesh(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RogueMesh]:
    started = time.monotonic()
    testbed = open_testbed(4, tmp_path_factory)
    kind = IdentityAgents(testbed)
    try:
        reason = kind.unavailable()
        if reason:
            pytest.skip(reason)
        mesh = RogueMesh(testbed, kind)
        first = mesh.members[0]
        mesh.procs[first.name] = kind.start(first, [])
        mesh.key_file = kind.home(first) / "cluster.key"
        wait_answering(kind, [first], timeout=TIMEOUT)
        for host in mesh.members[1:]:
            mesh.procs[host.name] = kind.start(host, [first])

        def ready() -> bool:
            for host in mesh.members:
                peers = mesh.peers(host)
                for name in mesh.names:
                    peer = peers.get(name)
                    if not peer or peer["state"] != "alive" or not peer["meta"].get("capacity"):
                        return False
                lease = mesh.get(host, "/v1/health").get("lease")
                if lease is not None and not lease.get("held"):
                    return False
            return True

        mesh.wait(ready, "the three agents never all saw each other with capacity")
        for pool, count in (("demo", 3), ("tomb", 1)):
            body = {"descriptor": pool_text(count), "name": pool}
            status, answer = mesh.call(first, "POST", "/v1/pools", body)
            assert status == 201, answer
        mesh.wait(lambda: mesh.running("demo") and mesh.running("tomb"), "the pools never ran")
        print(f"mesh and pools up in {time.monotonic() - started:.1f} s")
        yield mesh
    finally:
        kind.close()
        close_testbed(testbed)


def test_the_rogue_cannot_join_as_a_member(mesh: RogueMesh) -> None:
    a, b, c = mesh.members
    before = mesh.all_refusals()
    addresses = {h.name: mesh.peers(h)[b.name]["address"] for h in (a, c)}
    claimed = mesh.gossip(mesh.rogue_host)

    async def impersonate(rogue: Rogue) -> None:
        for target in (a, c):
            for self_signed in (False, True):
                await rogue.join_as(mesh.gossip(target), b.name, claimed, self_signed=self_signed)

    mesh.rogue(impersonate)
    deadline = time.monotonic() + 3  # a few gossip rounds: an accepted claim would spread
    while time.monotonic() < deadline:
        for viewer in (a, c):
            seen = mesh.peers(viewer)[b.name]
            assert seen["address"] == addresses[viewer.name], seen
            assert seen["state"] == "alive", seen
        time.sleep(0.3)
    assert mesh.procs[b.name].alive()
    after = mesh.all_refusals()
    for viewer in (a, c):
        got = (before[viewer.name], after[viewer.name])
        assert rose(*got, "identity_unsigned") >= 1, got
        assert rose(*got, "identity_bad_certificate") >= 1, got


def test_forged_orders_change_nothing(mesh: RogueMesh) -> None:
    shepherd = mesh.host(str(shepherd_of("demo", mesh.names)))
    record = mesh.record("demo")
    status = mesh.status(shepherd, "demo")
    leaves = [c for c in status["components"] if c.get("domain")]
    domains = mesh.pool_domains("demo")
    before = mesh.all_refusals()

    def orders_for(host: str, path: str) -> list[Order]:
        unit = next((u for u in record.placement if path.startswith(u)), path)
        made = []
        for op in ("terminate", "deploy", "start"):
            for named in ("mallory", shepherd.name):
                made.append(
                    Order("demo", record.generation, named, record.digest, path, op, unit, 1, 256)
                )
        return made

    async def forge(rogue: Rogue) -> list[Any]:
        answers = []
        for leaf in leaves:
            target = mesh.host(leaf["host"])
            for order in orders_for(leaf["host"], leaf["path"]):
                # Sealed as from the shepherd it names: the stream still comes from the rogue.
                sender = order.shepherd
                answers.append(
                    await rogue.order(mesh.gossip(target), target.name, order, sender=sender)
                )
        return answers

    answers = mesh.rogue(forge)
    assert len(answers) == 6 * len(leaves)
    for answer in answers:
        assert answer["answers"][0][0] == "unreachable", answer

    # What else speaks for a member: submissions, hand-overs, inventories and reports.
    successor = mesh.host(successors("demo", mesh.names, shepherd.name)[0])
    other = next(leaf for leaf in leaves if leaf["host"] != shepherd.name)
    forged = dataclasses.replace(record, generation=record.generation + 1, shepherd="mallory")

    async def speak_for_members(rogue: Rogue) -> list[Any]:
        at = mesh.gossip(shepherd)
        spec = (await rogue.rpc(at, shepherd.name, {"rpc": "spec", "digest": record.digest}))[
            "spec"
        ]
        g = record.generation
        submit = {"rpc": "submit", "spec": spec, "generation": g + 1}
        report = ["demo", g, other["host"], other["path"], "ended", None]
        return [
            await rogue.rpc(at, shepherd.name, {**submit, "from": shepherd.name}),
            await rogue.rpc(at, shepherd.name, {**submit, "from": "mallory"}),
            await rogue.rpc(
                at, shepherd.name, {**submit, "generation": 2**62, "from": shepherd.name}
            ),
            await rogue.rpc(
                mesh.gossip(successor),
                successor.name,
                {
                    "rpc": "handover",
                    "pool": "demo",
                    "from": shepherd.name,
                    "pools": [{"spec": spec, "record": forged.encode(), "leaves": {}}],
                },
            ),
            await rogue.rpc(
                at,
                shepherd.name,
                {"rpc": "inventory", "pool": "demo", "host": other["host"], "leaves": {}},
            ),
            await rogue.rpc(at, shepherd.name, {"rpc": "reports", "reports": [report]}),
        ]

    submitted, as_mallory, beyond, handed, inventory, reported = mesh.rogue(speak_for_members)
    assert submitted["ok"] is False and as_mallory["ok"] is False and beyond["ok"] is False
    assert "error" in handed and "error" in inventory, (handed, inventory)
    assert reported["ok"] is True  # answered, but the report is dropped (and counted)
    time.sleep(1)
    assert mesh.pool_domains("demo") == domains
    assert mesh.running("demo")
    now = mesh.status(shepherd, "demo")
    assert (now["shepherd"], now["generation"]) == (status["shepherd"], status["generation"])
    after = mesh.all_refusals()
    for name in {leaf["host"] for leaf in leaves}:
        aimed = 6 * sum(1 for leaf in leaves if leaf["host"] == name)
        aimed += 4 if name == shepherd.name else 0
        aimed += 1 if name == successor.name else 0
        assert rose(before[name], after[name], "wrong_sender") >= aimed, (name, after[name])
    assert rose(before[shepherd.name], after[shepherd.name], "generation") >= 1


def test_huge_generations_are_refused_and_the_name_stays_usable(mesh: RogueMesh) -> None:
    shepherd = shepherd_of("demo", mesh.names)
    domains = mesh.pool_domains("demo")
    before = mesh.all_refusals()

    async def forge(rogue: Rogue) -> list[Any]:
        answers = []
        for target in mesh.members:
            for pool in ("demo", "later"):
                for generation in HUGE:
                    answers.append(
                        await rogue.terminate(mesh.gossip(target), target.name, pool, generation)
                    )
        a = mesh.gossip(mesh.members[0])
        for pool in ("demo", "later"):
            for generation in HUGE:
                pool_body = {"digest": "0" * 64, "state": "terminated", "shepherd": "mallory"}
                await rogue.inject_rumor(a, "pool", pool, {**pool_body, "generation": generation})
                await rogue.inject_rumor(a, "tomb", pool, {"by": shepherd, "gen": generation})
        # The largest Lamport time: taken, it would leave no member able to publish again.
        await rogue.inject_rumor(a, "pool", "later", {"generation": 2**62}, ltime=2**64 - 1)
        return answers

    answers = mesh.rogue(forge)
    assert all(answer and answer.get("ok") is False for answer in answers), answers
    time.sleep(6)  # past the tombstone grace (5 s): a tombstone taken would tear down by now
    assert mesh.pool_domains("demo") == domains
    assert mesh.running("demo")
    after = mesh.all_refusals()
    for name in mesh.names:
        got = (before[name], after[name])
        assert rose(*got, "tombstone") >= 2 * len(HUGE), got  # its own RPCs
        if name == mesh.names[0]:  # heard the rumors first-hand (the others may relay them)
            # Unsigned pool rumors are refused for their missing proof (identities are on)
            # before their generation is looked at; tombstones count as tombstone either way.
            assert rose(*got, "generation") + rose(*got, "rumor") >= 2 * len(HUGE), got
            assert rose(*got, "tombstone") >= 4 * len(HUGE), got
            assert rose(*got, "rumor_clock") >= 1, got
    # The name the forgeries aimed at: submitted, running, terminated, as any other.
    b = mesh.members[1]
    status, answer = mesh.call(
        b, "POST", "/v1/pools", {"descriptor": pool_text(1), "name": "later"}
    )
    assert status == 201, answer
    mesh.wait(lambda: mesh.running("later"), "the pool 'later' never ran")
    status, answer = mesh.call(b, "DELETE", "/v1/pools/later")
    assert status == 202, answer


def test_forged_descriptors_and_malformed_records_are_not_kept(mesh: RogueMesh) -> None:
    """What every replica can check without knowing who wrote it: a descriptor stored under
    another descriptor's digest, a pool record that does not decode (a generation out of
    range). Only the rogue's own DHT node keeps them, even at the largest version."""
    genuine = mesh.record("demo")
    text = "sfConfig extends Compound {}"
    other = PoolSpec("demo", text, hashlib.sha256(text.encode()).hexdigest())
    beyond = dataclasses.replace(genuine, generation=2**62).encode()  # encode checks nothing
    seeds = mesh.dht_seeds()
    top = 2**63 - 1

    async def forge(rogue: Rogue) -> list[int]:
        spec_key = f"spec/{genuine.digest}"
        return [
            await rogue.store_value(seeds, spec_key, b"\x00" + other.encode(), top, sequence=top),
            await rogue.store_value(seeds, "pool/demo", b"\x00" + beyond, top, sequence=top),
        ]

    assert mesh.rogue(forge) == [1, 1]  # the rogue's own node only
    assert mesh.running("demo")


def test_forged_records_do_not_steer_the_takeover(mesh: RogueMesh) -> None:
    names = mesh.names
    shepherd = mesh.host(str(shepherd_of("demo", names)))
    successor = mesh.host(successors("demo", names, shepherd.name)[0])
    genuine = mesh.record("demo")
    assert genuine.shepherd == shepherd.name and genuine.state == "running", genuine
    elsewhere = {u: next(n for n in names if n != h) for u, h in genuine.placement.items()}
    g = genuine.generation
    # Each forgery at a higher DHT version than the last, so each in turn is the newest
    # copy; state terminated last (it decodes, and would stop any takeover).
    forged = [
        dataclasses.replace(genuine, generation=g + 1, placement=elsewhere),
        dataclasses.replace(genuine, generation=g + 2, shepherd="mallory"),
        dataclasses.replace(genuine, generation=2**31 - 1),  # the largest that decodes
    ]
    beyond = dataclasses.replace(genuine, generation=2**62).encode()  # encode checks nothing
    ended = dataclasses.replace(genuine, generation=g + 5, state="terminated", reason="forged")
    seeds = mesh.dht_seeds()
    before = mesh.all_refusals()

    async def forge(rogue: Rogue) -> list[int]:
        stored = [
            await rogue.store_record(seeds, r, dht_generation=g + i + 1)
            for i, r in enumerate(forged)
        ]
        stored.append(await rogue.store_record(seeds, beyond, pool="demo", dht_generation=g + 4))
        stored.append(await rogue.store_record(seeds, ended))
        return stored

    stored = mesh.rogue(forge)
    print(f"replicas that took each forged record: {stored}")
    time.sleep(2)
    assert mesh.running("demo")
    survivors = [h for h in mesh.members if h != shepherd]
    kept = {h: ds for h, ds in mesh.pool_domains("demo").items() if h != shepherd.name}
    mesh.testbed.kill(mesh.procs[shepherd.name])  # kill -9: no hand-over, a takeover

    def taken_over() -> bool:
        found = mesh.pool_domains("demo")
        everywhere = [d for ds in found.values() for d in ds]
        assert len(everywhere) == len(set(everywhere)), f"a VM runs twice: {found}"
        for name, domains in kept.items():  # what survived stays where it was
            assert domains <= found[name], (name, domains, found)
        status = mesh.status(successor, "demo")
        return (
            status["state"] == "running"
            and status["shepherd"] == successor.name
            and len(everywhere) == 3
        )

    mesh.wait(taken_over, "the successor never took demo over", timeout=30)
    assert mesh.running("demo", survivors)
    after = mesh.all_refusals()
    counted = {
        reason: rose(before[successor.name], after[successor.name], reason)
        for reason in after[successor.name]
        if "record" in reason
    }
    assert any(v > 0 for v in counted.values()), (before, after)


def test_forged_tombstones_at_the_pools_generation_change_nothing(mesh: RogueMesh) -> None:
    live = mesh.alive_members()
    names = [h.name for h in live]
    shepherd = mesh.host(str(shepherd_of("tomb", names)))
    generation = int(mesh.status(shepherd, "tomb")["generation"])
    domains = mesh.pool_domains("tomb")
    assert sum(len(ds) for ds in domains.values()) == 1, domains
    before = mesh.all_refusals()

    async def forge(rogue: Rogue) -> list[Any]:
        entry = mesh.gossip(live[0])
        for sig in (None, b"garbage", b"\x00" * 200):
            body: dict[str, object] = {"by": shepherd.name, "gen": generation}
            if sig is not None:
                body["sig"] = sig
            await rogue.inject_rumor(entry, "tomb", "tomb", body, origin=shepherd.name)
        answers = []
        for target in live:
            for signature in (b"", b"garbage"):
                answers.append(
                    await rogue.terminate(
                        mesh.gossip(target),
                        target.name,
                        "tomb",
                        generation,
                        signature=signature,
                        sender=shepherd.name,
                    )
                )
        return answers

    answers = mesh.rogue(forge)
    assert all(answer and answer.get("ok") is False for answer in answers), answers
    time.sleep(6)  # past the tombstone grace
    assert mesh.pool_domains("tomb") == domains
    assert mesh.running("tomb")
    after = mesh.all_refusals()
    for name in names:
        assert rose(before[name], after[name], "tombstone") >= 2, (name, after[name])


def test_forged_pool_rumors_change_nothing(mesh: RogueMesh) -> None:
    live = mesh.alive_members()
    status, answer = mesh.call(
        live[0], "POST", "/v1/pools", {"descriptor": pool_text(1), "name": "rumored"}
    )
    assert status == 201, answer
    mesh.wait(lambda: mesh.running("rumored", live), "the pool 'rumored' never ran")
    genuine = mesh.status(live[0], "rumored")
    generation = int(genuine["generation"])

    async def forge(rogue: Rogue) -> None:
        entry = mesh.gossip(live[0])
        said = {"digest": "0" * 64, "state": "terminated", "shepherd": "mallory"}
        await rogue.inject_rumor(entry, "pool", "rumored", {**said, "generation": generation + 1})
        await rogue.inject_rumor(
            entry, "pool", "fresh", {**said, "state": "running", "generation": 1}
        )

    mesh.rogue(forge)
    time.sleep(2)  # gossip reaches every member
    for host in live:
        seen = mesh.status(host, "rumored")
        assert (seen["state"], seen["shepherd"]) == (genuine["state"], genuine["shepherd"]), seen
    status, answer = mesh.call(
        live[-1], "POST", "/v1/pools", {"descriptor": pool_text(1), "name": "fresh"}
    )
    assert status == 201, answer
