"""Prometheus metrics of one agent (``GET /metrics``).

Almost everything is read at scrape time from what the agent already counts (membership
view, the membership core's stats, the gossip driver's and the DHT's counters, transport
drops, pool and shepherd state), through one custom collector: nothing is counted twice, and
nothing on the hot paths changes. Only deploy-phase timings are observed as they happen:

``sdmesh_deploy_phase_seconds{phase=...}``, this host's own leaf operations:

* ``image``: a VM leaf's deploy (its domain spec checked against this host, its cloud-init
  seed image written);
* ``disk``: a storage leaf's deploy (the guest disk made from its base image);
* ``define`` and ``start``: libvirt defining the domain, then booting it (the VM's start);
* ``running``: a VM leaf, from its deploy order to its domain running here (waits for the
  shepherd's start order included).

Each agent has its own registry: tests run several agents in one process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sdmesh.agent.api_context import AgentView
    from sdmesh.agent.pools import LeafOp

PHASES = ("image", "disk", "define", "start", "running")
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
MEMBER_STATES = ("alive", "suspect", "dead", "left")
POOL_STATES = ("deploying", "running", "terminating", "terminated", "failed")
COMPONENT_STATES = (
    "created",
    "deploying",
    "deployed",
    "starting",
    "running",
    "terminating",
    "terminated",
    "failed",
)
DHT_FAILURES = {
    "timeout": "timeouts",
    "unexpected_response": "unexpected_responses",
    "identity_mismatch": "identity_mismatches",
    "malformed": "malformed",
    "send_error": "send_errors",
    "socket_error": "socket_errors",
    "refused_store": "refused_stores",
    "bad_record": "bad_records",
}


class AgentMetrics:
    """The agent's registry: its collector, and the deploy-phase histogram it feeds."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.phases = Histogram(
            "sdmesh_deploy_phase_seconds",
            "How long each phase of this host's leaf deploys took.",
            ["phase"],
            registry=self.registry,
            buckets=PHASE_BUCKETS,
        )
        for phase in PHASES:
            self.phases.labels(phase=phase)  # every phase listed, observed or not
        self._deploying: dict[tuple[str, str], float] = {}
        self.registry.register(_AgentCollector(agent))
        if agent.pools is not None:
            agent.pools.leaf_listeners.append(self.leaf_op)
        from sdmesh.hypervisor import LibvirtDriver

        if isinstance(agent.hypervisor, LibvirtDriver):
            agent.hypervisor.phase_observer = self.observe

    def observe(self, phase: str, seconds: float) -> None:
        """Thread-safe (the driver calls it from its worker threads)."""
        self.phases.labels(phase=phase).observe(seconds)

    def leaf_op(self, op: LeafOp) -> None:
        from sdmesh.components.registry import VIRTUAL_MACHINE
        from sdmesh.components.storage import STORAGE_CLASSES

        key = (op.pool, op.path)
        vm = op.sf_class == VIRTUAL_MACHINE
        if op.seconds is None:
            if op.op == "deploy" and vm:
                self._deploying[key] = time.monotonic()
            return
        if op.error is not None or op.op == "terminate":
            self._deploying.pop(key, None)
            return
        if op.op == "deploy" and vm:
            self.observe("image", op.seconds)
        elif op.op == "deploy" and op.sf_class in STORAGE_CLASSES:
            self.observe("disk", op.seconds)
        elif op.op == "start" and vm:
            began = self._deploying.pop(key, None)
            if began is not None:
                self.observe("running", time.monotonic() - began)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _AgentCollector(Collector):
    """Reads the agent's own counters and views at scrape time."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._members()
        yield from self._gossip()
        yield from self._dht()
        yield from self._drops()
        yield from self._pools()
        yield from self._events()
        yield from self._refusals()
        yield from self._mesh_refusals()

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on what is running; nothing to check at registration

    def _refusals(self) -> Iterator[Metric]:
        """Submissions and leaves the operator-signature check refused, by reason."""
        trust = getattr(self.agent, "trust", None)
        if trust is not None:
            from sdmesh.trust.authorize import refusal_metric

            yield refusal_metric(trust.refusals)

    def _mesh_refusals(self) -> Iterator[Metric]:
        """Requests from other members refused as unauthorized (sdmesh.pools.authz)."""
        refusals = getattr(self.agent.pools, "refusals", None)
        if refusals is None:
            return
        family = CounterMetricFamily(
            "sdmesh_mesh_refusals",
            "Orders, reports, submissions, hand-overs, terminations and tombstones from "
            "other members refused as unauthorized or out of bounds, by reason.",
            labels=["reason"],
        )
        for reason, value in refusals.samples():
            family.add_metric([reason], value)
        yield family

    def _members(self) -> Iterator[Metric]:
        node = self.agent.node
        counts = Counter(m.state.value for m in node.core.members()) if node else Counter()
        family = GaugeMetricFamily(
            "sdmesh_members", "Members in this agent's view, by state.", labels=["state"]
        )
        for state in sorted({*MEMBER_STATES, *counts}):
            family.add_metric([state], counts.get(state, 0))
        yield family

    def _gossip(self) -> Iterator[Metric]:
        node = self.agent.node
        if node is None:
            return
        stats, counters = node.core.stats, node.counters
        sent = CounterMetricFamily(
            "sdmesh_gossip_messages_sent",
            "Membership messages sent: datagrams, and push-pull streams opened.",
            labels=["channel"],
        )
        sent.add_metric(["datagram"], stats.datagrams_sent)
        sent.add_metric(["stream"], stats.streams_opened)
        received = CounterMetricFamily(
            "sdmesh_gossip_messages_received",
            "Membership messages received that authenticated and decoded.",
            labels=["channel"],
        )
        received.add_metric(["datagram"], counters.datagrams_received)
        received.add_metric(["stream"], counters.streams_received)
        failures = CounterMetricFamily(
            "sdmesh_gossip_failures",
            "Membership failures: probes unanswered, push-pulls failed, datagrams not sent.",
            labels=["kind"],
        )
        failures.add_metric(["probe"], stats.probe_failures)
        failures.add_metric(["stream"], counters.stream_failures)
        failures.add_metric(["send"], counters.send_failures + node.udp.socket_errors)
        yield from (sent, received, failures)

    def _dht(self) -> Iterator[Metric]:
        dht = self.agent.dht
        if dht is None:
            return
        counters = dht.counters
        sent = CounterMetricFamily(
            "sdmesh_dht_rpcs_sent", "DHT RPC messages sent.", labels=["message"]
        )
        sent.add_metric(["request"], counters.requests_sent)
        sent.add_metric(["response"], counters.responses_sent)
        received = CounterMetricFamily(
            "sdmesh_dht_rpcs_received", "DHT RPC messages received.", labels=["message"]
        )
        received.add_metric(["request"], counters.requests_received)
        received.add_metric(["response"], counters.responses_received)
        failures = CounterMetricFamily(
            "sdmesh_dht_rpc_failures", "DHT RPCs that failed, by reason.", labels=["reason"]
        )
        for reason, field in DHT_FAILURES.items():
            failures.add_metric([reason], getattr(counters, field))
        yield from (sent, received, failures)

    def _drops(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sdmesh_frames_dropped",
            "Datagrams and stream frames refused before anyone acted on them, by reason "
            "(unknown_key and auth_failed: decryption failures).",
            labels=["layer", "reason"],
        )
        for reason, count in sorted(self.agent.drops().items()):
            family.add_metric(["gossip", reason], count)
        if self.agent.dht is not None:
            for reason, count in sorted(self.agent.dht.counters.drops.as_dict().items()):
                family.add_metric(["dht", reason], count)
        yield family

    def _pools(self) -> Iterator[Metric]:
        pools = self.agent.pools
        by_pool: Counter[str] = Counter()
        by_component: Counter[str] = Counter()
        leaves = 0
        if pools is not None:
            by_pool.update(str(item["state"]) for item in pools.pools())
            for run in pools.shepherding.values():
                by_component.update(str(item["state"]) for item in run.core.components())
            leaves = sum(len(pools.host.inventory(pool)) for pool in pools.host.pools_held())
        family = GaugeMetricFamily(
            "sdmesh_pools", "Pools this agent knows of, by state.", labels=["state"]
        )
        for state in sorted({*POOL_STATES, *by_pool}):
            family.add_metric([state], by_pool.get(state, 0))
        yield family
        family = GaugeMetricFamily(
            "sdmesh_components",
            "Components of the pools this agent shepherds, by state (summed over the agents, "
            "every component counts once).",
            labels=["state"],
        )
        for state in sorted({*COMPONENT_STATES, *by_component}):
            family.add_metric([state], by_component.get(state, 0))
        yield family
        yield GaugeMetricFamily(
            "sdmesh_host_leaves", "Leaves (VMs, disks, ...) this host runs.", value=leaves
        )

    def _events(self) -> Iterator[Metric]:
        hub = self.agent.events
        yield GaugeMetricFamily(
            "sdmesh_event_followers", "Clients following /v1/events.", value=hub.subscribers
        )
        yield CounterMetricFamily(
            "sdmesh_events_published", "Live events published.", value=hub.published
        )
        yield CounterMetricFamily(
            "sdmesh_events_dropped",
            "Live events slow followers lost (each told with an overflow marker).",
            value=hub.dropped,
        )


__all__ = ["PHASES", "AgentMetrics"]
