"""Agent metrics: what the collector reads at scrape time, and the deploy-phase timings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sdmesh.agent.events import EventHub
from sdmesh.agent.mesh import GossipCounters
from sdmesh.agent.metrics import PHASES, AgentMetrics
from sdmesh.agent.pools import LeafOp
from sdmesh.components.registry import VIRTUAL_MACHINE
from sdmesh.dht.counters import DhtCounters
from sdmesh.membership import Member
from sdmesh.membership.core import Stats
from sdmesh.membership.member import State


def member(name: str, state: State) -> Member:
    return Member(name, ("127.0.0.1", 1), state=state)


class Pools:
    def __init__(self) -> None:
        self.leaf_listeners: list[Any] = []
        components = [{"state": "running"}, {"state": "running"}, {"state": "deploying"}]
        self.shepherding = {
            "p": SimpleNamespace(core=SimpleNamespace(components=lambda: components))
        }
        self.host = SimpleNamespace(
            pools_held=lambda: ["p", "q"], inventory=lambda pool: {"a": 1, "b": 1}
        )

    def pools(self) -> list[dict[str, object]]:
        return [{"pool": "p", "state": "running"}, {"pool": "q", "state": "failed"}]


def agent() -> Any:
    stats = Stats(datagrams_sent=7, streams_opened=2, probe_failures=1)
    gossip = GossipCounters(datagrams_received=5, streams_received=3, stream_failures=4)
    dht = DhtCounters(requests_sent=11, responses_received=9, timeouts=2)
    dht.drops.auth_failed = 6
    members = [member("a", State.ALIVE), member("b", State.ALIVE), member("c", State.DEAD)]
    node = SimpleNamespace(
        core=SimpleNamespace(members=lambda: members, stats=stats),
        counters=gossip,
        udp=SimpleNamespace(socket_errors=1),
    )
    return SimpleNamespace(
        node=node,
        dht=SimpleNamespace(counters=dht),
        pools=Pools(),
        hypervisor=None,
        events=EventHub(),
        drops=lambda: {"unknown_key": 3, "replay": 1},
    )


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_collector_reads_the_agents_counters_at_scrape_time() -> None:
    the_agent = agent()
    metrics = AgentMetrics(the_agent)
    found = samples(metrics)
    assert found[("sdmesh_members", (("state", "alive"),))] == 2
    assert found[("sdmesh_members", (("state", "dead"),))] == 1
    assert found[("sdmesh_members", (("state", "suspect"),))] == 0
    assert found[("sdmesh_gossip_messages_sent_total", (("channel", "datagram"),))] == 7
    assert found[("sdmesh_gossip_messages_received_total", (("channel", "stream"),))] == 3
    assert found[("sdmesh_gossip_failures_total", (("kind", "probe"),))] == 1
    assert found[("sdmesh_gossip_failures_total", (("kind", "send"),))] == 1
    assert found[("sdmesh_dht_rpcs_sent_total", (("message", "request"),))] == 11
    assert found[("sdmesh_dht_rpcs_received_total", (("message", "response"),))] == 9
    assert found[("sdmesh_dht_rpc_failures_total", (("reason", "timeout"),))] == 2
    dropped = "sdmesh_frames_dropped_total"
    assert found[(dropped, (("layer", "gossip"), ("reason", "unknown_key")))] == 3
    assert found[(dropped, (("layer", "dht"), ("reason", "auth_failed")))] == 6
    assert found[("sdmesh_pools", (("state", "running"),))] == 1
    assert found[("sdmesh_pools", (("state", "failed"),))] == 1
    assert found[("sdmesh_pools", (("state", "terminating"),))] == 0
    assert found[("sdmesh_components", (("state", "running"),))] == 2
    assert found[("sdmesh_components", (("state", "deploying"),))] == 1
    assert found[("sdmesh_host_leaves", ())] == 4
    # Read again at the next scrape, never cached.
    the_agent.node.counters.datagrams_received += 10
    assert (
        samples(metrics)[("sdmesh_gossip_messages_received_total", (("channel", "datagram"),))]
        == 15
    )


def test_an_agent_still_starting_has_the_families_without_values() -> None:
    bare: Any = SimpleNamespace(
        node=None, dht=None, pools=None, hypervisor=None, events=EventHub(), drops=dict
    )
    found = samples(AgentMetrics(bare))
    assert found[("sdmesh_members", (("state", "alive"),))] == 0
    assert found[("sdmesh_event_followers", ())] == 0


def leaf(
    op: str, path: str, sf_class: str, seconds: float | None, error: str | None = None
) -> LeafOp:
    state = "failed" if error else "x"
    return LeafOp("p", path, op, state, "Kind", sf_class, "", seconds, error)


def test_deploy_phases_are_timed_from_this_hosts_leaf_operations() -> None:
    the_agent = agent()
    metrics = AgentMetrics(the_agent)
    (listener,) = the_agent.pools.leaf_listeners
    disk, vm = "sdmesh.storage.Qcow2OverlayBackend", VIRTUAL_MACHINE
    listener(leaf("deploy", "d", disk, None))
    listener(leaf("deploy", "d", disk, 0.2))
    listener(leaf("deploy", "v", vm, None))
    listener(leaf("deploy", "v", vm, 0.03))
    listener(leaf("start", "v", vm, None))
    metrics.observe("define", 0.01)  # what the libvirt driver reports
    metrics.observe("start", 0.5)
    listener(leaf("start", "v", vm, 0.6))
    listener(leaf("deploy", "w", vm, None))
    listener(leaf("deploy", "w", vm, 0.1, error="no such image"))  # failures are not timed
    listener(leaf("start", "w", vm, 0.1))
    found = samples(metrics)

    def count(phase: str) -> float:
        return found[("sdmesh_deploy_phase_seconds_count", (("phase", phase),))]

    assert {phase: count(phase) for phase in PHASES} == {
        "image": 1,
        "disk": 1,
        "define": 1,
        "start": 1,
        "running": 1,
    }
    assert found[("sdmesh_deploy_phase_seconds_sum", (("phase", "disk"),))] == 0.2
    assert found[("sdmesh_deploy_phase_seconds_bucket", (("le", "0.25"), ("phase", "disk")))] == 1


def test_registries_are_per_agent() -> None:
    first, second = AgentMetrics(agent()), AgentMetrics(agent())
    first.observe("disk", 1.0)
    assert samples(first)[("sdmesh_deploy_phase_seconds_count", (("phase", "disk"),))] == 1
    assert samples(second)[("sdmesh_deploy_phase_seconds_count", (("phase", "disk"),))] == 0
