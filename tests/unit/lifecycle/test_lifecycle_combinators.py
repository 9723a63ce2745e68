"""SmartFrog lifecycle semantics, combinator by combinator, on a simulated clock."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sdmesh.language import resolve_file
from sdmesh.lifecycle.engine import Engine
from sdmesh.lifecycle.model import State, TerminateApplication, TerminationRecord
from sdmesh.lifecycle.runtime import resolve_attribute

from .harness import SimDriver, leaf

EXAMPLES = Path(__file__).resolve().parents[3] / "descriptors" / "examples"


def test_compound_barriers_in_declaration_order() -> None:
    sim = SimDriver(f"sfConfig extends Compound {{ {leaf('a')} {leaf('b')} {leaf('c')} }}").run(
        until=10
    )
    assert sim.ops("deploy") == ["a", "b", "c"] and sim.ops("start") == ["a", "b", "c"]
    starts = [t for t, op, _ in sim.log if op == "start"]
    deploys = [t for t, op, _ in sim.log if op == "deploy"]
    assert max(deploys) < min(starts), "every child deployed before any starts"
    assert sim.max_in_flight == 1, "a Compound deploys one child at a time"
    assert sim.state_of("sfConfig") is State.RUNNING


def test_deploy_failure_rolls_back_everything_in_reverse_order() -> None:
    sim = SimDriver(
        f"sfConfig extends Compound {{ sfSyncTerminate true; {leaf('a')} {leaf('b')} {leaf('c')} }}",
        fail={("deploy", "sfConfig:b"): "disk full"},
    ).run()
    assert sim.ops("deploy") == ["a", "b"]
    assert sim.ops("terminate") == ["b", "a"], "the failed child and what came before, reversed"
    assert sim.ended is not None and not sim.ended.normal and sim.ended.description == "disk full"
    assert sim.state_of("sfConfig:b") is State.FAILED  # where it happened
    assert sim.state_of("sfConfig:a") is State.TERMINATED  # torn down because of it
    assert sim.state_of("sfConfig:c") is State.TERMINATED  # created, never deployed
    assert sim.state_of("sfConfig") is State.FAILED  # and the application it ended


def test_sync_terminate_one_at_a_time_async_all_at_once() -> None:
    text = "sfConfig extends Compound {{ sfSyncTerminate {}; {} {} {} }}"
    for sync, expected_parallel in (("true", 1), ("false", 3)):
        sim = SimDriver(text.format(sync, leaf("a"), leaf("b"), leaf("c"))).run(until=10)
        sim.max_in_flight = sim.in_flight = 0
        sim.feed(TerminateApplication(TerminationRecord.normal_end("External Management Action")))
        sim.run(start=False)
        assert sim.ops("terminate") == ["c", "b", "a"]
        assert sim.max_in_flight == expected_parallel
        assert sim.ended is not None and sim.ended.normal


def test_parallel_asynch_deploys_everything_at_once() -> None:
    sim = SimDriver(
        "sfConfig extends Compound { pool extends Parallel { asynchCreateChild true; "
        f"{leaf('a')} {leaf('b')} {leaf('c')} }} }}"
    ).run(until=10)
    assert sim.max_in_flight == 3
    assert sim.state_of("sfConfig:pool:c") is State.RUNNING


def test_parallel_sync_barriers() -> None:
    sim = SimDriver(
        f"sfConfig extends Compound {{ pool extends Parallel {{ {leaf('a')} {leaf('b')} }} }}"
    ).run(until=10)
    assert [op for _, op, _ in sim.log] == ["deploy", "deploy", "start", "start"]


def test_abnormal_child_takes_down_the_application() -> None:
    sim = SimDriver(
        "sfConfig extends Compound { pool extends Parallel { asynchCreateChild true; "
        f"{leaf('a')} {leaf('b')} }} }}"
    )
    sim.kill("sfConfig:pool:a", at=5)
    sim.run()
    assert sim.ended is not None and sim.ended.description == "domain died"
    assert sorted(sim.ops("terminate")) == ["pool:a", "pool:b"]


def test_parallel_can_ignore_abnormal_children() -> None:
    sim = SimDriver(
        "sfConfig extends Compound { pool extends Parallel { asynchCreateChild true; "
        f"terminateOnAbnormalChildTermination false; {leaf('a')} {leaf('b')} }} }}"
    )
    sim.kill("sfConfig:pool:a", at=5)
    sim.run(until=20)
    assert sim.ended is None and sim.state_of("sfConfig:pool:b") is State.RUNNING


def test_parallel_async_deploy_failure_policy() -> None:
    text = (
        "sfConfig extends Compound {{ pool extends Parallel {{ asynchCreateChild true; "
        "terminateOnAbnormalChildDeploy {}; {} {} }} }}"
    )
    failing = {("deploy", "sfConfig:pool:a"): "no image"}
    sim = SimDriver(text.format("true", leaf("a"), leaf("b")), fail=failing).run()
    assert sim.ended is not None and not sim.ended.normal
    tolerant = SimDriver(text.format("false", leaf("a"), leaf("b")), fail=failing).run(until=20)
    assert tolerant.ended is None and tolerant.state_of("sfConfig:pool:b") is State.RUNNING
    assert tolerant.ops("terminate") == ["pool:a"], "the failed child is rolled back alone"


def test_parallel_ends_normally_when_children_do() -> None:
    sim = SimDriver(f"sfConfig extends Compound {{ p extends Parallel {{ {leaf('a')} }} }}")
    sim.run(until=5)
    from sdmesh.lifecycle.model import LeafEnded

    sim.schedule(6, LeafEnded("sfConfig:p:a", TerminationRecord.normal_end("done")))
    sim.run(start=False)
    assert sim.ended is not None and sim.ended.normal


def test_sequence_runs_children_in_turn_and_stops_on_failure() -> None:
    from sdmesh.lifecycle.model import LeafEnded

    sim = SimDriver(f"sfConfig extends Sequence {{ {leaf('a')} {leaf('b')} {leaf('c')} }}")
    sim.run(until=3)
    assert sim.ops("deploy") == ["a"]
    sim.schedule(4, LeafEnded("sfConfig:a", TerminationRecord.normal_end("ok")))
    sim.schedule(9, LeafEnded("sfConfig:b", TerminationRecord.abnormal("bad")))
    sim.run(start=False)
    assert sim.ops("deploy") == ["a", "b"]
    assert sim.ended is not None and sim.ended.description == "bad"


def test_retry_reruns_fresh_copies() -> None:
    fail = {("start", "sfConfig:running_0"): "boom", ("start", "sfConfig:running_1"): "boom"}
    ok = SimDriver(f"sfConfig extends Retry {{ retry 2; {leaf('action')} }}", fail=fail).run(
        until=50
    )
    assert ok.ops("deploy") == ["running_0", "running_1", "running_2"]
    assert ok.ended is None and ok.state_of("sfConfig:running_2") is State.RUNNING
    exhausted = SimDriver(
        f"sfConfig extends Retry {{ retry 1; {leaf('action')} }}", fail=fail
    ).run()
    assert exhausted.ended is not None and exhausted.ended.description == "boom"


def test_repeat_runs_n_times() -> None:
    from sdmesh.lifecycle.model import LeafEnded

    sim = SimDriver(f"sfConfig extends Repeat {{ repeat 3; {leaf('action')} }}")
    for i, at in enumerate((5, 10, 15), start=1):
        sim.schedule(at, LeafEnded(f"sfConfig:running_{i}", TerminationRecord.normal_end("ok")))
    sim.run()
    assert sim.ops("deploy") == ["running_1", "running_2", "running_3"]
    assert sim.ended is not None and sim.ended.normal


def test_timeout_and_during() -> None:
    timeout = SimDriver(f"sfConfig extends Timeout {{ time 5000; {leaf('action')} }}").run()
    assert timeout.ended is not None and timeout.ended.description == "timeout occurred"
    assert not timeout.ended.normal and timeout.log[-1][0] == 5.0
    during = SimDriver(f"sfConfig extends During {{ time 5000; {leaf('action')} }}").run()
    assert during.ended is not None and during.ended.normal


def test_delay_waits_then_runs() -> None:
    sim = SimDriver(f"sfConfig extends Delay {{ time 3000; {leaf('action')} }}").run(until=20)
    assert sim.log[0][:2] == (3.0, "deploy")


def test_try_runs_the_handler_for_the_outcome() -> None:
    sim = SimDriver(
        f'sfConfig extends Try {{ {leaf("action")} abnormal extends Prim {{ sfClass "test.Leaf"; }} }}',
        fail={("start", "sfConfig:action_running"): "failed"},
    ).run(until=20)
    assert "abnormal_running" in sim.ops("deploy")


def test_terminator_kills_its_target() -> None:
    sim = SimDriver(
        "sfConfig extends Compound { sfSyncTerminate true; "
        f"{leaf('victim')} t extends Terminator {{ kill LAZY ATTRIB victim; }} }}"
    ).run()
    assert sim.ops("terminate")[0] == "victim"
    assert sim.ended is not None and sim.ended.normal


def test_terminate_during_deploy_waits_then_cleans_up() -> None:
    sim = SimDriver(f"sfConfig extends Compound {{ {leaf('a', '')} }}", delays={"sfConfig:a": 10})
    sim.run(until=2)
    sim.feed(TerminateApplication(TerminationRecord.normal_end("Ctrl-C")))
    sim.run(start=False)
    assert [(t, op) for t, op, _ in sim.log] == [(0.0, "deploy"), (10.0, "terminate")]
    assert sim.ended is not None


def test_tutorial_async_pool_order_and_lazy_links() -> None:
    sim = SimDriver("sfConfig extends Compound { }")
    engine = sim.engine = Engine(resolve_file(EXAMPLES / "asyncVirtualPool.sf").root)
    sim.run(until=100)
    deploys = sim.ops("deploy")
    assert deploys[0] == "myShell"
    assert deploys.index("pool:smartDomain1:loop") < deploys.index("pool:smartDomain1:domain1")
    # the two smart domains progress side by side
    first_two = {p.split(":")[1] for p in deploys[1:3]}
    assert first_two == {"smartDomain1", "smartDomain2"}
    domain = engine.nodes["sfConfig:pool:smartDomain1:domain1"]
    backend = resolve_attribute(engine.root, domain, "storageBackend")
    shell = resolve_attribute(engine.root, domain, "shell")
    assert backend is engine.nodes["sfConfig:pool:smartDomain1:loop"]
    assert shell is engine.nodes["sfConfig:myShell"]


_tree = st.recursive(
    st.just("leaf"),
    lambda children: st.tuples(
        st.sampled_from(["Compound", "Parallel", "AsyncParallel", "Sequence"]),
        st.lists(children, min_size=0, max_size=3),
    ),
    max_leaves=8,
)


def _render(tree: object, counter: list[int]) -> str:
    counter[0] += 1
    name = f"n{counter[0]}"
    if tree == "leaf":
        return leaf(name)
    assert isinstance(tree, tuple)
    kind, children = tree
    body = " ".join(_render(child, counter) for child in children)
    if kind == "AsyncParallel":
        return f"{name} extends Parallel {{ asynchCreateChild true; {body} }}"
    return f"{name} extends {kind} {{ sfSyncTerminate true; {body} }}"


@settings(max_examples=120, deadline=None)
@given(_tree, st.data())
def test_nothing_deployed_is_ever_leaked(tree: object, data: st.DataObject) -> None:
    text = "sfConfig extends Compound { " + _render(tree, [0]) + " }"
    sim = SimDriver(text)
    failures = data.draw(st.lists(st.integers(0, 20), max_size=3))
    sim.run(until=3)
    paths = sorted({path for _, op, path in sim.log})
    for index in failures:
        if paths:
            sim.kill(paths[index % len(paths)], at=sim.now + 1 + index)
    sim.run(until=50, start=False)
    sim.feed(TerminateApplication(TerminationRecord.normal_end("end of test")))
    sim.run(start=False)
    assert sim.ended is not None
    deployed = {path for _, op, path in sim.log if op == "deploy"}
    terminated = {path for _, op, path in sim.log if op == "terminate"}
    assert deployed <= terminated, "every leaf that was deployed is cleaned up"
    assert all(node.state.ended for node in sim.engine.nodes.values())


def test_sync_parallel_fails_its_start_when_a_child_ends_inside_the_barrier() -> None:
    """Regression: it used to wait in 'starting' forever."""
    for options in ("", "terminateOnAbnormalChildTermination false;"):
        sim = SimDriver(
            f"sfConfig extends Compound {{ p extends Parallel {{ {options} "
            f"{leaf('a')} {leaf('b')} }} }}",
            delays={"sfConfig:p:b": 10},
        )
        sim.kill("sfConfig:p:a", at=2.5)  # a is deployed; b is still deploying
        sim.run()
        assert sim.ended is not None and not sim.ended.normal, options
        assert "Failed to start sub-components" in sim.ended.description
        assert all(node.state.ended for node in sim.engine.nodes.values())


def test_sync_parallel_with_a_compound_child_whose_start_fails() -> None:
    sim = SimDriver(
        "sfConfig extends Compound { p extends Parallel { "
        f"c extends Compound {{ {leaf('x')} }} {leaf('b')} }} }}",
        fail={("start", "sfConfig:p:c:x"): "boot failed"},
    )
    sim.run()
    assert sim.ended is not None and "boot failed" in sim.ended.description
    assert {p for _, op, p in sim.log if op == "deploy"} <= {
        p for _, op, p in sim.log if op == "terminate"
    }
