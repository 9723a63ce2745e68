"""Placement and shepherd selection: deterministic, constraint-respecting, never overcommitted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sdmesh.pools.ownership import by_distance, shepherd
from sdmesh.pools.placement import Demand, HostOffer, place


def host(name: str, free: int, vcpus: int = 8, labels: tuple[str, ...] = ()) -> HostOffer:
    return HostOffer(name, vcpus, free, free, frozenset(labels))


def vm(i: int, memory: int = 1024, **extra: object) -> Demand:
    return Demand(f"sfConfig:pool:vm{i}", 1, memory, **extra)  # type: ignore[arg-type]


def test_spread_balances_and_pack_fills() -> None:
    hosts = [host("a", 4096), host("b", 4096), host("c", 4096)]
    spread = place([vm(i) for i in range(3)], hosts)
    assert sorted(spread.assignments.values()) == ["a", "b", "c"]
    pack = place([vm(i, policy="pack") for i in range(3)], hosts)
    assert set(pack.assignments.values()) == {"a"}


def test_round_robin_over_the_scheduler_hosts() -> None:
    hosts = [host("host1", 8192), host("host2", 8192), host("host3", 8192), host("other", 8192)]
    names = ("host1", "host2", "host3")
    plan = place([vm(i, policy="round-robin", hosts=names) for i in range(5)], hosts)
    assert list(plan.assignments.values()) == ["host1", "host2", "host3", "host1", "host2"]


def test_pinned_labels_and_anti_affinity() -> None:
    hosts = [host("a", 8192, labels=("ssd",)), host("b", 8192), host("c", 8192, labels=("ssd",))]
    plan = place(
        [
            vm(0, pinned="b"),
            vm(1, labels=frozenset({"ssd"})),
            vm(2, anti_affinity="db", labels=frozenset({"ssd"})),
            vm(3, anti_affinity="db", labels=frozenset({"ssd"})),
            vm(4, anti_affinity="db", labels=frozenset({"ssd"})),
        ],
        hosts,
    )
    assert plan.assignments["sfConfig:pool:vm0"] == "b"
    assert plan.assignments["sfConfig:pool:vm1"] in {"a", "c"}
    assert {plan.assignments[f"sfConfig:pool:vm{i}"] for i in (2, 3)} == {"a", "c"}
    (unplaced,) = plan.unplaced
    assert unplaced.path == "sfConfig:pool:vm4" and "anti-affinity group 'db'" in unplaced.reason


def test_unplaceable_vm_is_reported_with_reasons() -> None:
    plan = place([vm(0, memory=9000)], [host("a", 4096), host("b", 8192)])
    assert not plan.complete
    assert plan.unplaced[0].reason == (
        "fits on no host (a has 4096 MiB free, needs 9000; b has 8192 MiB free, needs 9000)"
    )
    missing = place([vm(0, pinned="zz")], [host("a", 4096)])
    assert "is not a live member" in missing.unplaced[0].reason


def test_refusals_lead_to_replacement_elsewhere_keeping_the_rest() -> None:
    hosts = [host("a", 4096), host("b", 4096)]
    first = place([vm(0), vm(1)], hosts)
    refused = first.assignments["sfConfig:pool:vm0"]
    kept = {k: v for k, v in first.assignments.items() if k != "sfConfig:pool:vm0"}
    again = place([vm(0), vm(1)], hosts, exclude=[refused], already=kept)
    assert again.assignments["sfConfig:pool:vm0"] != refused
    assert again.assignments["sfConfig:pool:vm1"] == first.assignments["sfConfig:pool:vm1"]


def test_vcpu_overcommit_is_bounded() -> None:
    plan = place(
        [Demand(f"v{i}", 2, 64) for i in range(10)], [host("a", 1 << 20, vcpus=4)], vcpu_ratio=2
    )
    assert len(plan.assignments) == 4 and len(plan.unplaced) == 6


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(256, 16384), min_size=1, max_size=6),
    st.lists(
        st.tuples(st.integers(64, 8192), st.sampled_from(["spread", "pack", "round-robin"])),
        max_size=40,
    ),
)
def test_never_overcommits_memory(frees: list[int], vms: list[tuple[int, str]]) -> None:
    hosts = [host(f"h{i}", free) for i, free in enumerate(frees)]
    demands = [Demand(f"v{i}", 1, memory, policy=policy) for i, (memory, policy) in enumerate(vms)]  # type: ignore[arg-type]
    plan = place(demands, hosts)
    used: dict[str, int] = {}
    for demand in demands:
        where = plan.assignments.get(demand.path)
        if where is not None:
            used[where] = used.get(where, 0) + demand.memory_mib
    for offer in hosts:
        assert used.get(offer.name, 0) <= offer.memory_free_mib
    assert len(plan.assignments) + len(plan.unplaced) == len(demands)


def test_shepherd_is_the_closest_member_and_failover_is_the_next() -> None:
    members = [f"node{i}" for i in range(10)]
    order = by_distance("pool-42", members)
    assert shepherd("pool-42", members) == order[0]
    assert shepherd("pool-42", [m for m in members if m != order[0]]) == order[1]
    assert shepherd("pool-42", []) is None
    assert by_distance("pool-42", reversed(members)) == order, "independent of view order"
