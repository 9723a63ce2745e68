"""A rejoining host or shepherd never fails a pool by deploying a VM before its disk
(nemesis seed 2026: h2, beta's shepherd, left and rejoined; its agent had found the disk by
its tags, answered "deployed" for it at once without its component, then deployed the VM,
which found "no disk yet", and the whole pool failed despite ``restart "always"``)."""

from __future__ import annotations

from sdmesh.pools import host as hc
from sdmesh.pools import shepherd as sc
from sdmesh.pools.records import Order

from .cluster import Cluster, SimHost
from .test_pool_converge import once_each, settle
from .test_pool_cores import hosts, pool_text

NO_DISK = "its storage backend has no disk yet"


class ComponentCluster(Cluster):
    """Hosts that, like the agent's driver, keep each deployed component in memory: a VM
    deploys only once its disk's component was deployed by this process."""

    def __init__(self, spec: dict[str, tuple[int, int]]) -> None:
        super().__init__(spec)
        self.memory: dict[str, set[tuple[str, str]]] = {name: set() for name in spec}
        self.failures: list[tuple[str, str, str]] = []

    def run_leaf(self, host: SimHost, action: hc.RunLeaf) -> None:
        key = (action.pool, action.path)
        memory = self.memory[host.name]
        disk = (action.pool, action.path.replace(":vm", ":disk"))
        if action.op == "deploy" and action.path.endswith(":vm") and disk not in memory:
            self.failures.append((host.name, action.path, NO_DISK))

            def refuse() -> None:
                event = hc.LeafFinished(action.pool, action.path, "deploy", NO_DISK)
                self.host_event(host.name, event)

            self.at(0.01, refuse)
            return
        if action.op == "deploy":
            memory.add(key)
        elif action.op == "terminate":
            memory.discard(key)
        super().run_leaf(host, action)

    def restart_agent(self, name: str, *, adopt: bool) -> None:
        """The agent starts again after its VMs died with it (the test driver): libvirt lists
        no domain, its disks are found by their tags; nothing is in memory."""
        sim = self.hosts[name]
        disks = [
            (p, path, leaf.generation)
            for p, state in sim.core.pools.items()
            for path, leaf in state.leaves.items()
            if path.endswith(":disk")
        ]
        sim.real = {key: up for key, up in sim.real.items() if key[1].endswith(":disk")}
        sim.core = hc.HostCore(name, sim.core.vcpus, sim.core.memory_mib)
        self.memory[name] = set()
        for pool, path, generation in disks:
            sim.core.handle(hc.Recovered(pool, path, path, generation, "", adopt=adopt))


def test_a_disk_found_by_its_tags_is_deployed_again_before_it_counts() -> None:
    core = hc.HostCore("h2", 4, 4096)
    disk, vm = "sfConfig:pool:sd0:disk", "sfConfig:pool:sd0:vm"
    core.handle(hc.Recovered("beta", disk, disk, 3, "", adopt=True))
    core.handle(hc.Recovered("beta", vm, vm, 3, ""))  # a domain libvirt lists

    def order(path: str, op: str) -> list[hc.Action]:
        return core.handle(hc.OrderReceived(Order("beta", 4, "h0", "d", path, op, vm, 1, 256)))

    assert [type(a) for a in order(disk, "deploy")] == [hc.Answer, hc.RunLeaf]
    assert [type(a) for a in order(vm, "deploy")] == [hc.Answer, hc.SendReport]  # done
    core.handle(hc.LeafFinished("beta", disk, "deploy"))
    assert [type(a) for a in order(disk, "deploy")] == [hc.Answer, hc.SendReport]  # done now


def _shepherd_rejoins(cluster: ComponentCluster, *, adopt: bool) -> sc.Shepherd:
    text = pool_text(3, restart="always")
    cluster.submit(text, "beta", "h2")
    cluster.run(until=5)
    assert cluster.dht["beta"].state == "running"
    held = [k for k, up in cluster.hosts["h2"].real.items() if up]
    assert held, "the shepherd's host runs a VM of the pool"
    vouched = {"h2": cluster.hosts["h2"].core.holdings("beta")}  # its word as it leaves
    cluster.leave("h2")
    successor = cluster.take_over(text, cluster.dht["beta"], "h0", vouched)
    cluster.run(until=cluster.now + 5)
    cluster.restart_agent("h2", adopt=adopt)
    cluster.come_back("h2")
    del cluster.shepherds[("beta", "h0")]  # it hands the pool back to its old shepherd
    del successor
    core = cluster.take_over(text, cluster.dht["beta"], "h2")
    cluster.run(until=cluster.now + 5)
    settle(cluster, "beta", "h2")
    return core


def test_a_rejoining_shepherd_deploys_each_disk_before_its_vm() -> None:
    cluster = ComponentCluster(hosts(3))
    core = _shepherd_rejoins(cluster, adopt=True)
    assert cluster.failures == []
    assert core.state == "running", (core.state, core.reason)
    once_each(cluster, "beta", 3)


def test_a_no_disk_yet_refusal_rebuilds_a_restartable_vm_and_never_fails_the_pool() -> None:
    # The host as it was (it answers "deployed" for a disk it has no component of): its VM
    # deploy fails, and the unit is rebuilt elsewhere, disk first, instead.
    cluster = ComponentCluster(hosts(3))
    core = _shepherd_rejoins(cluster, adopt=False)
    assert cluster.failures and all(f[0] == "h2" for f in cluster.failures)
    assert core.state == "running", (core.state, core.reason)
    once_each(cluster, "beta", 3)


def test_a_vm_that_never_restarts_still_fails_on_a_failed_deploy() -> None:
    cluster = ComponentCluster(hosts(2))
    cluster.memory = {name: set() for name in cluster.hosts}
    real = cluster.run_leaf

    def no_disks(host: SimHost, action: hc.RunLeaf) -> None:
        if action.path.endswith(":disk") and action.op == "deploy":
            cluster.at(
                0.01,
                lambda: cluster.host_event(
                    host.name, hc.LeafFinished(action.pool, action.path, "deploy", "disk full")
                ),
            )
            return
        real(host, action)

    cluster.run_leaf = no_disks  # type: ignore[method-assign]
    core = cluster.submit(pool_text(1), "web", "h0")
    cluster.run(until=5)
    assert core.state == "failed"


def test_a_replay_follows_the_unit_order_whatever_the_leaves_order() -> None:
    cluster = ComponentCluster(hosts(3))
    core = cluster.submit(pool_text(2, restart="always"), "web", "h0")
    cluster.run(until=5)
    core.leaves = dict(reversed(list(core.leaves.items())))  # the VMs first
    lost = next(h for h in ("h1", "h2") if h in core.placement.values())
    cluster.kill(lost)  # its units are rebuilt on a host that has none of their disks
    cluster.run(until=cluster.now + 5)
    settle(cluster, "web", "h0")
    assert cluster.failures == []
    assert core.state == "running", (core.state, core.reason)
    once_each(cluster, "web", 2)
