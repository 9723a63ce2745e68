"""``ForceLeave``: an operator declares a failed member gone for good (Serf's force-leave).

The pools' majority rule counts dead members until they are reaped, a day later; a forced leave
makes every member see the dead one as left at once. Only dead members are forced out, and a
member that was alive after all refutes the notice like any other claim about it.
"""

from __future__ import annotations

from sdmesh.membership import (
    Alive,
    Dead,
    ForceLeave,
    ForceLeaveOutcome,
    ForceLeaveResult,
    LeaveRequested,
    Member,
    MemberEvent,
    MemberEventKind,
    PushPull,
    State,
    StreamReceived,
    Suspect,
)
from sdmesh.membership.actions import Action
from sdmesh.membership.core import REAP
from sdmesh.sim import SimNode, Simulator
from sdmesh.sim.experiments import node_name, preloaded_cluster

from .harness import Harness, addr_of, member, member_events, sent_parts

PEERS = ["b", "c", "d", "e"]


def result_of(actions: list[Action]) -> ForceLeaveResult:
    [result] = [action for action in actions if isinstance(action, ForceLeaveResult)]
    return result


def with_dead(name: str = "b", incarnation: int = 3) -> Harness:
    """``me`` among PEERS, holding ``name`` dead at ``incarnation``."""
    h = Harness("me", PEERS)
    h.receive("c", Alive(name, incarnation, addr_of(name), {}))
    h.receive("c", Dead(name, incarnation, "c"))
    assert h.core.state_of(name) is State.DEAD
    return h


# ---------------------------------------------------------------------- the forcing member


def test_a_dead_member_is_marked_left_at_its_own_incarnation() -> None:
    h = with_dead("b", 3)
    actions = h.feed(ForceLeave("b"))
    [event] = member_events(actions)
    assert (event.kind, event.old_state, event.new_state) == (
        MemberEventKind.LEFT,
        State.DEAD,
        State.LEFT,
    )
    result = result_of(actions)
    assert result.outcome is ForceLeaveOutcome.LEFT and result.outcome.done
    assert result.member == Member("b", addr_of("b"), 3, State.LEFT, {})
    assert h.core.member("b") == result.member
    assert h.core.stats.forced_leaves == 1


def test_the_left_notice_is_gossiped_from_us() -> None:
    h = with_dead("b", 3)
    h.feed(ForceLeave("b"))
    assert "gossip" in h.timers
    gossiped = sent_parts(h.fire("gossip"))
    assert Dead("b", 3, "me", left=True) in gossiped


def test_forcing_twice_changes_nothing_the_second_time() -> None:
    h = with_dead("b", 3)
    h.feed(ForceLeave("b"))
    pending = h.core.pending_broadcasts
    actions = h.feed(ForceLeave("b"))
    assert result_of(actions).outcome is ForceLeaveOutcome.ALREADY_LEFT
    assert result_of(actions).outcome.done
    assert member_events(actions) == []
    assert h.core.pending_broadcasts == pending
    assert h.core.member("b") == Member("b", addr_of("b"), 3, State.LEFT, {})
    assert h.core.stats.forced_leaves == 1


def test_a_member_that_left_by_itself_is_already_left() -> None:
    h = Harness("me", PEERS)
    h.receive("b", Dead("b", 1, "b", left=True))
    assert result_of(h.feed(ForceLeave("b"))).outcome is ForceLeaveOutcome.ALREADY_LEFT


def test_alive_suspect_unknown_and_self_are_refused_without_any_change() -> None:
    h = Harness("me", PEERS)
    h.receive("c", Suspect("d", 0, "c"))
    assert h.core.state_of("d") is State.SUSPECT
    before = h.core.members()
    pending = h.core.pending_broadcasts
    expected = {
        "b": ForceLeaveOutcome.ALIVE,
        "d": ForceLeaveOutcome.SUSPECT,
        "nobody": ForceLeaveOutcome.UNKNOWN,
        "me": ForceLeaveOutcome.SELF,
    }
    for name, outcome in expected.items():
        actions = h.feed(ForceLeave(name))
        result = result_of(actions)
        assert result.outcome is outcome and not outcome.done
        assert member_events(actions) == []
        assert result.member == h.core.member(name)
    assert h.core.members() == before
    assert h.core.pending_broadcasts == pending
    assert h.core.stats.forced_leaves == 0


def test_a_leaving_member_refuses_and_a_stopped_one_ignores_it() -> None:
    h = with_dead("b", 3)
    h.feed(LeaveRequested())
    assert result_of(h.feed(ForceLeave("b"))).outcome is ForceLeaveOutcome.NOT_RUNNING
    assert h.core.state_of("b") is State.DEAD
    h.fire("leave")
    assert h.feed(ForceLeave("b")) == []  # a stopped core ignores every event


def test_a_forced_member_is_reaped_after_the_left_delay_not_the_dead_one() -> None:
    h = with_dead("b", 3)
    h.advance(60)
    h.feed(ForceLeave("b"))
    forced_at = h.now
    h.now = forced_at + h.config.left_reap_after - 1
    h.fire(REAP)
    assert h.core.state_of("b") is State.LEFT
    h.now = forced_at + h.config.left_reap_after
    actions = h.fire(REAP)  # the next round, within reap_interval
    [event] = member_events(actions)
    assert event.kind is MemberEventKind.REAPED and h.core.member("b") is None
    assert result_of(h.feed(ForceLeave("b"))).outcome is ForceLeaveOutcome.UNKNOWN


# ---------------------------------------------------------------------- other members


def test_members_that_hold_it_dead_suspect_or_alive_at_that_incarnation_take_it() -> None:
    for setup in ("dead", "suspect", "alive"):
        h = Harness("me", PEERS)
        h.receive("c", Alive("b", 3, addr_of("b"), {}))
        if setup == "dead":
            h.receive("c", Dead("b", 3, "c"))
        elif setup == "suspect":
            h.receive("c", Suspect("b", 3, "c"))
        [event] = member_events(h.receive("c", Dead("b", 3, "c", left=True)))
        assert event.kind is MemberEventKind.LEFT, setup
        assert h.core.state_of("b") is State.LEFT
        # ... and pass it on.
        assert Dead("b", 3, "c", left=True) in sent_parts(h.fire("gossip"))


def test_a_member_that_knows_a_newer_incarnation_ignores_the_notice() -> None:
    h = Harness("me", PEERS)
    h.receive("c", Alive("b", 4, addr_of("b"), {}))
    assert member_events(h.receive("c", Dead("b", 3, "c", left=True))) == []
    assert h.core.member("b") == Member("b", addr_of("b"), 4, State.ALIVE, {})


def test_push_pull_carries_the_verdict_and_a_stale_dead_cannot_undo_it() -> None:
    h = with_dead("b", 3)
    state = (
        member("me"),
        member("c"),
        Member("b", addr_of("b"), 3, State.LEFT),
    )
    [event] = member_events(h.feed(StreamReceived(addr_of("c"), PushPull("c", False, True, state))))
    assert event.kind is MemberEventKind.LEFT
    stale = (member("me"), member("d"), Member("b", addr_of("b"), 3, State.DEAD))
    assert (
        member_events(h.feed(StreamReceived(addr_of("d"), PushPull("d", False, True, stale)))) == []
    )
    assert h.core.state_of("b") is State.LEFT
    stale_alive = (member("me"), Member("b", addr_of("b"), 3, State.ALIVE))
    h.feed(StreamReceived(addr_of("d"), PushPull("d", False, True, stale_alive)))
    assert h.core.state_of("b") is State.LEFT


# ---------------------------------------------------------------------- refutation


def test_a_member_forced_out_while_alive_refutes_with_a_higher_incarnation() -> None:
    h = Harness("b", ["me", "c", "d"], incarnation=3)
    actions = h.receive("me", Dead("b", 3, "me", left=True))
    assert h.core.incarnation == 4
    assert h.core.state_of("b") is State.ALIVE
    assert h.core.stats.refutations == 1
    assert Alive("b", 4, addr_of("b"), {}) in sent_parts([*actions, *h.fire("gossip")])


def test_the_refutation_brings_it_back_where_it_was_forced_out() -> None:
    h = with_dead("b", 3)
    h.feed(ForceLeave("b"))
    [event] = member_events(h.receive("b", Alive("b", 4, addr_of("b"), {})))
    assert (event.kind, event.old_state) == (MemberEventKind.JOINED, State.LEFT)
    assert h.core.member("b") == Member("b", addr_of("b"), 4, State.ALIVE, {})
    # Old news at the forced incarnation cannot send it back out.
    h.receive("c", Dead("b", 3, "me", left=True))
    assert h.core.state_of("b") is State.ALIVE


# ---------------------------------------------------------------------- whole mesh


class Seen:
    """Member events about one subject, and the force-leave results, as the nodes report."""

    def __init__(self, sim: Simulator, subject: str) -> None:
        self.subject = subject
        self.kinds: dict[str, list[MemberEventKind]] = {}
        self.results: list[tuple[str, ForceLeaveResult]] = []
        sim.listeners.append(self)

    def __call__(self, at: float, node: SimNode, action: Action) -> None:
        if isinstance(action, ForceLeaveResult):
            self.results.append((node.name, action))
        elif isinstance(action, MemberEvent) and action.member.name == self.subject:
            self.kinds.setdefault(node.name, []).append(action.kind)


def states_of(sim: Simulator, subject: str) -> set[State | None]:
    return {node.core.state_of(subject) for node in sim.running_nodes()}


def test_a_force_leave_from_one_node_reaches_every_node() -> None:
    sim = preloaded_cluster(40, seed=21)
    victim = node_name(17)
    seen = Seen(sim, victim)
    sim.run_until(5)
    sim.crash(victim)
    sim.run_until(25)
    assert states_of(sim, victim) == {State.DEAD}
    operator = node_name(3)
    sim.force_leave(operator, victim)
    [(at, result)] = seen.results
    assert at == operator and result.outcome is ForceLeaveOutcome.LEFT
    sim.run_until(30)
    assert states_of(sim, victim) == {State.LEFT}
    running = {node.name for node in sim.running_nodes()}
    assert {name for name, kinds in seen.kinds.items() if MemberEventKind.LEFT in kinds} == (
        running
    )


def test_a_member_forced_out_while_cut_off_rejoins_when_the_partition_heals() -> None:
    """Forcing out a member that is in fact alive (here: isolated, not dead) is undone by the
    member itself as soon as it hears of it: its refutation outranks the notice."""
    sim = preloaded_cluster(20, seed=22)
    victim = node_name(5)
    seen = Seen(sim, victim)
    sim.run_until(5)
    others = [name for name in sim.nodes if name != victim]
    sim.network.partition([[victim], others])
    sim.run_until(30)
    assert {sim.nodes[name].core.state_of(victim) for name in others} == {State.DEAD}
    sim.force_leave(node_name(0), victim)
    sim.run_until(35)
    assert {sim.nodes[name].core.state_of(victim) for name in others} == {State.LEFT}
    sim.network.heal()
    sim.run_until(80)
    assert states_of(sim, victim) == {State.ALIVE}
    assert sim.nodes[victim].core.incarnation > 0
    rejoined = {n for n, kinds in seen.kinds.items() if MemberEventKind.JOINED in kinds}
    assert rejoined == set(others)
