"""The lease core: renewal by a majority, self-fencing, reclaim only after surely expired."""

from __future__ import annotations

from typing import Any

import pytest

from sdmesh.ha import lease as ls
from sdmesh.ha.timing import LeaseTiming

T = LeaseTiming()
VOTERS = frozenset({"a", "b", "c"})


def of(actions: list[ls.Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def to(actions: list[ls.Action], name: str) -> ls.Send:
    sends: list[ls.Send] = of(actions, ls.Send)
    return next(a for a in sends if a.to == name)


def started(name: str, voters: frozenset[str] = VOTERS, now: float = 0.0) -> ls.LeaseCore:
    core = ls.LeaseCore(name, T, nonce="n")
    core.handle(ls.Start(voters, None), now)
    return core


def exchange(holder: ls.LeaseCore, voters: dict[str, ls.LeaseCore], now: float) -> list[Any]:
    """One renew round: holder's requests to ``voters``, their answers back."""
    out = holder.handle(ls.TimerFired(ls.RENEW), now)
    back: list[ls.Action] = []
    for send in of(out, ls.Send):
        if send.to in voters:
            for answer in of(voters[send.to].handle(ls.Received(send.message), now), ls.Send):
                back += holder.handle(ls.Received(answer.message), now)
    return out + back


def test_timing_arithmetic_and_checks() -> None:
    assert T.rebuild_wait == pytest.approx(6.0 * 1.01 / 0.99)
    assert T.rebuild_wait < 6.2  # HA in seconds: rebuild ~6.1 s after the last grant
    # The failover budget: the lease wait and the shepherd's loss verdict run in parallel.
    from sdmesh.pools.losses import LOSS_CONFIRM

    assert T.failover_orders_after(2.0, LOSS_CONFIRM) == T.rebuild_wait
    assert T.failover_orders_after(5.0, LOSS_CONFIRM) == 7.0
    with pytest.raises(ValueError, match="isolation timeout"):
        LeaseTiming(isolation_timeout=1.5, stop_allowance=1.0, renew_interval=1.0)
    with pytest.raises(ValueError, match="drift"):
        LeaseTiming(drift=0.6)


def test_a_fresh_agent_holds_no_lease_and_says_so() -> None:
    core = ls.LeaseCore("a", T)
    out = core.handle(ls.Start(VOTERS, None), 10.0)
    assert of(out, ls.Isolated) and not core.may_run(10.0)
    assert {s.to for s in of(out, ls.Send)} == {"b", "c"}


def test_a_majority_renews_and_the_lease_runs_from_the_send_time() -> None:
    a, b = started("a"), started("b")
    out = exchange(a, {"b": b}, 1.0)  # a (itself) and b: 2 of 3
    valid = of(out, ls.LeaseValid)
    assert valid == [ls.LeaseValid(1.0 + T.isolation_timeout, 1.0 + 5.0)]
    assert a.may_run(5.9) and not a.may_run(6.0)


def test_without_a_majority_the_holder_fences_at_its_deadline() -> None:
    a, b = started("a"), started("b")
    exchange(a, {"b": b}, 1.0)
    for t in (2.0, 3.0, 4.0, 5.0):
        assert not of(exchange(a, {}, t), ls.LeaseValid)  # cut off: nobody answers
    out = a.handle(ls.TimerFired(ls.FENCE), 6.0)
    assert of(out, ls.Isolated) and not a.may_run(6.0)


def test_late_grants_from_before_a_lapse_do_not_revive_the_lease() -> None:
    a, b = started("a"), started("b")
    request = of(a.handle(ls.TimerFired(ls.RENEW), 1.0), ls.Send)[0]
    a.handle(ls.TimerFired(ls.FENCE), 6.0)  # the start-up grace ran out
    grant = of(b.handle(ls.Received(request.message), 1.0), ls.Send)[0]
    assert not of(a.handle(ls.Received(grant.message), 6.5), ls.LeaseValid)


def test_a_reclaim_waits_out_every_grant_then_revokes_for_good() -> None:
    a, b, c = started("a"), started("b"), started("c")
    for t in range(1, 10):
        exchange(a, {"b": b, "c": c}, float(t))  # granted at 9.0 last, by b and c
    # a is cut off now; c reclaims it and asks b.
    out = c.handle(ls.Reclaim("a"), 10.0)
    query = to(out, "b")
    answer = of(b.handle(ls.Received(query.message), 10.0), ls.Send)[0].message
    assert answer.remaining == pytest.approx(9.0 + T.rebuild_wait - 10.0)
    assert not of(c.handle(ls.Received(answer), 10.0), ls.Reclaimed)
    # Asked again once the wait is over: both say nothing remains.
    later = 9.0 + T.rebuild_wait
    out = c.handle(ls.TimerFired(ls.RECLAIM_PREFIX + "a"), later)
    query = to(out, "b")
    answer = of(b.handle(ls.Received(query.message), later), ls.Send)[0].message
    assert answer.remaining == 0.0
    assert of(c.handle(ls.Received(answer), later), ls.Reclaimed)
    # The holder's lease (dated 9.0 on its clock) was over at 15.0: before the rebuild.
    assert not a.may_run(9.0 + T.isolation_timeout)
    # Back in touch: b refuses until a acknowledges, and a fences before it does.
    out = exchange(a, {"b": b, "c": c}, 20.0)
    assert of(out, ls.Isolated) and not a.may_run(20.0)
    out = exchange(a, {"b": b, "c": c}, 21.0)
    assert of(out, ls.LeaseValid) and a.may_run(21.5)


def test_a_revocation_fences_a_holder_that_still_had_a_lease() -> None:
    a, b, c = started("a"), started("b"), started("c")
    exchange(a, {"b": b, "c": c}, 7.0)
    c.handle(ls.Reclaim("a"), 7.5)  # a wrong verdict: a is fine
    out = exchange(a, {"b": b, "c": c}, 8.0)
    assert of(out, ls.Isolated)  # c refused: a fences, then acknowledges
    assert not a.may_run(8.5)


def test_a_restarted_voter_cannot_vouch_for_what_it_forgot() -> None:
    b = ls.LeaseCore("b", T)
    b.handle(ls.Start(VOTERS, None), 100.0)
    out = b.handle(ls.Received(ls.ReclaimQuery("c", "a", "t1")), 101.0)
    assert of(out, ls.Send)[0].message.remaining is None
    out = b.handle(ls.Received(ls.ReclaimQuery("c", "a", "t1")), 100.0 + T.rebuild_wait)
    assert of(out, ls.Send)[0].message.remaining == 0.0


def test_revocations_and_long_grants_survive_a_voter_restart() -> None:
    b = started("b")
    out = b.handle(ls.Received(ls.LeaseRequest("a", 1, T.leave_term)), 7.0)
    out += b.handle(ls.Received(ls.ReclaimQuery("c", "x", "t9")), 8.0)
    saved = of(out, ls.PersistVoterState)[-1].state
    assert saved.revoked == (("x", "t9"),)
    assert saved.long_grants[0][0] == "a"
    again = ls.LeaseCore("b", T, saved)
    again.handle(ls.Start(VOTERS, None), 0.0)
    refused = of(again.handle(ls.Received(ls.LeaseRequest("x", 1, 6.0)), 1.0), ls.Send)
    assert refused[0].message == ls.LeaseRevoked("b", "x", ("t9",))
    answer = of(again.handle(ls.Received(ls.ReclaimQuery("c", "a", "t2")), 1.0), ls.Send)
    assert answer[0].message.remaining > T.leave_term  # the leave's lease is still promised


def test_a_planned_leave_asks_for_the_leave_term() -> None:
    a, b = started("a"), started("b")
    exchange(a, {"b": b}, 1.0)
    out = a.handle(ls.PlannedLeave(), 2.0)
    request = to(out, "b")
    answer = of(b.handle(ls.Received(request.message), 2.0), ls.Send)[0]
    valid = of(a.handle(ls.Received(answer.message), 2.0), ls.LeaseValid)
    assert valid[0].until == pytest.approx(2.0 + T.leave_term)


def test_any_event_past_the_deadline_fences_even_if_the_timer_is_late() -> None:
    a, b = started("a"), started("b")
    exchange(a, {"b": b}, 1.0)
    out = a.handle(ls.VotersChanged(VOTERS), 30.0)  # woke from a suspend: no timer yet
    assert of(out, ls.Isolated) and not a.may_run(30.0)


def test_a_voter_grants_no_lease_longer_than_it_promises() -> None:
    b = started("b")
    assert b.handle(ls.Received(ls.LeaseRequest("a", 1, T.leave_term + 1)), 1.0) == []


def test_inherited_deadline_covers_leftovers_no_longer_than_it_did() -> None:
    core = ls.LeaseCore("a", T)
    out = core.handle(ls.Start(VOTERS, 12.0), 10.0)
    assert not of(out, ls.Isolated) and core.may_run(11.9) and not core.may_run(12.0)


def test_two_hosts_and_a_witness_the_side_with_the_witness_wins() -> None:
    voters = frozenset({"a", "b", "w"})
    a, b, w = started("a", voters), started("b", voters), started("w", voters)
    for t in range(1, 8):
        exchange(a, {"b": b, "w": w}, float(t))
        exchange(b, {"a": a, "w": w}, float(t))
    b_out: list[ls.Action] = []
    for t in range(8, 16):  # a and b cut apart; only a reaches the witness
        exchange(a, {"w": w}, float(t))
        b_out += exchange(b, {}, float(t))
    assert a.may_run(15.5)
    assert of(b_out, ls.Isolated) and not b.may_run(15.5)
    out = a.handle(ls.Reclaim("b"), 16.0)
    query = to(out, "w")
    answer = of(w.handle(ls.Received(query.message), 16.0), ls.Send)[0].message
    assert of(a.handle(ls.Received(answer), 16.0), ls.Reclaimed)


def test_an_even_split_fences_both_sides_and_reclaims_nothing() -> None:
    voters = frozenset({"a", "b", "c", "d"})
    cores = {n: started(n, voters) for n in voters}
    for t in range(1, 4):
        for n, core in cores.items():
            exchange(core, {m: c for m, c in cores.items() if m != n}, float(t))
    sides = ({"a", "b"}, {"c", "d"})
    for t in range(4, 20):
        for side in sides:
            for n in side:
                exchange(cores[n], {m: cores[m] for m in side if m != n}, float(t))
                cores[n].handle(ls.TimerFired(ls.FENCE), float(t))
    assert not any(core.may_run(19.0) for core in cores.values())
    out = cores["a"].handle(ls.Reclaim("c"), 20.0)
    query = to(out, "b")
    answer = of(cores["b"].handle(ls.Received(query.message), 20.0), ls.Send)[0].message
    assert not of(cores["a"].handle(ls.Received(answer), 20.0), ls.Reclaimed)  # 2 of 4


def test_a_restarted_host_alone_in_its_view_is_no_majority_of_one() -> None:
    """Before its join completes a restarted host sees only itself: its own grant must
    neither make a lease nor stretch the inherited guard deadline."""
    core = ls.LeaseCore("a", T)
    out = core.handle(ls.Start(frozenset({"a"}), 12.0), 10.0)
    assert not of(out, ls.LeaseValid) and core.may_run(11.9)
    for t in (10.5, 11.0, 11.5):
        assert not of(core.handle(ls.TimerFired(ls.RENEW), t), ls.LeaseValid)
    assert core.fence_at == 12.0 and not core.may_run(12.0)
    fresh = ls.LeaseCore("a", T)
    fresh.handle(ls.Start(frozenset({"a"}), None), 10.0)
    assert not fresh.may_run(10.0)


def test_the_inherited_deadline_holds_until_another_voter_grants() -> None:
    a, b = ls.LeaseCore("a", T), started("b")
    a.handle(ls.Start(VOTERS, 12.0), 10.0)
    assert a.fence_at == 12.0  # own grant alone: 1 of 3
    out = exchange(a, {"b": b}, 10.5)
    assert of(out, ls.LeaseValid) and a.fence_at == 10.5 + T.isolation_timeout - T.stop_allowance


def test_a_mesh_of_one_grants_itself() -> None:
    core = ls.LeaseCore("a", T)
    out = core.handle(ls.Start(frozenset({"a"}), None, solo=True), 10.0)
    assert of(out, ls.LeaseValid) and core.may_run(10.0)
    lone = started("a", frozenset({"a", "b"}))
    lone.handle(ls.VotersChanged(frozenset({"a"}), solo=True), 1.0)  # b left
    assert of(lone.handle(ls.TimerFired(ls.RENEW), 1.5), ls.LeaseValid)
