"""Failure detection in one core: probes, relays, suspicion, local health."""

from __future__ import annotations

import itertools

import msgpack
import pytest

from sdmesh.membership import (
    Ack,
    Action,
    Alive,
    Compound,
    MemberEventKind,
    MembershipConfig,
    Nack,
    Ping,
    PingReq,
    State,
    Suspect,
    TimerFired,
)
from sdmesh.membership.config import suspicion_bounds

from .harness import Harness, addr_of, member_events, sends, sent_parts, timer_at

PEERS = ["b", "c", "d", "e", "f", "g"]


def probe(h: Harness) -> tuple[str, Ping]:
    """Fire the probe timer; return the target and the ping sent to it."""
    actions = h.fire("probe")
    for send in sends(actions):
        for part in sent_parts([send]):
            if isinstance(part, Ping):
                target = next(p for p in [*PEERS, "x", "y"] if addr_of(p) == send.addr)
                return target, part
    raise AssertionError("no ping sent")


def fail_probe(h: Harness, *, nacks: int | None = None) -> tuple[str, list[PingReq]]:
    """Probe, let the direct ping time out, answer with ``nacks`` nacks (all by default),
    and close the period."""
    target, ping = probe(h)
    requests = [p for p in sent_parts(h.fire("probe-timeout")) if isinstance(p, PingReq)]
    for _ in range(len(requests) if nacks is None else nacks):
        h.receive("c", Nack(ping.seq))
    return target, requests


def test_start_arms_the_periodic_timers() -> None:
    h = Harness("me", PEERS)
    assert {"probe", "push-pull", "reconnect", "reap"} <= set(h.timers)
    assert h.timers["probe"] == h.config.probe_interval  # aligned phase in the harness


def test_ping_is_answered_with_an_ack_to_the_sender() -> None:
    h = Harness("me", PEERS)
    actions = h.receive("b", Ping(41, "me"))
    assert sends(actions)[0].addr == addr_of("b")
    assert Ack(41) in sent_parts(actions)


def test_ping_for_another_name_is_not_acked() -> None:
    h = Harness("me", PEERS)
    assert not any(isinstance(p, Ack) for p in sent_parts(h.receive("b", Ping(1, "other"))))
    assert h.core.stats.pings_for_others == 1


def test_acked_probe_improves_health_and_cancels_the_timeout() -> None:
    h = Harness("me", PEERS)
    h.core._health.score = 2
    target, ping = probe(h)
    actions = h.receive(target, Ack(ping.seq))
    assert h.core.local_health == 1
    assert "probe-timeout" not in h.timers
    assert not member_events(actions)
    assert not member_events(h.fire("probe"))


def test_probes_walk_every_member_round_robin() -> None:
    h = Harness("me", PEERS)
    seen = []
    for _ in range(len(PEERS)):
        target, ping = probe(h)
        h.receive(target, Ack(ping.seq))
        seen.append(target)
    assert sorted(seen) == PEERS


def test_indirect_probe_asks_relays_and_their_ack_counts() -> None:
    h = Harness("me", PEERS)
    target, ping = probe(h)
    requests = [p for p in sent_parts(h.fire("probe-timeout")) if isinstance(p, PingReq)]
    assert len(requests) == h.config.indirect_checks
    assert all(r.target == target and r.nack and r.seq == ping.seq for r in requests)
    relay_addrs = [s.addr for s in sends(h.log[-len(requests) :])]
    assert addr_of(target) not in relay_addrs
    h.receive("c", Ack(ping.seq))  # relayed ack
    assert not member_events(h.fire("probe"))
    assert h.core.state_of(target) is State.ALIVE


def test_failed_probe_suspects_the_target() -> None:
    h = Harness("me", PEERS)
    target, _ = fail_probe(h)
    actions = h.fire("probe")
    [event] = member_events(actions)
    assert event.kind is MemberEventKind.SUSPECTED
    assert event.member.name == target and event.new_state is State.SUSPECT
    assert h.core.stats.suspicions_raised == 1
    # All relays nacked: the target is the likely culprit, our health is unchanged.
    assert h.core.local_health == 0
    # The suspicion is disseminated on the next datagrams.
    assert Suspect(target, 0, "me") in sent_parts(actions + h.receive("b", Ping(9, "me")))


def test_missing_nacks_worsen_local_health() -> None:
    h = Harness("me", PEERS)
    fail_probe(h, nacks=1)
    h.fire("probe")
    assert h.core.local_health == h.config.indirect_checks - 1


def test_failed_probe_without_relays_costs_one_health_point() -> None:
    h = Harness("me", ["b"])
    _, requests = fail_probe(h)
    assert requests == []
    h.fire("probe")
    assert h.core.local_health == 1


def test_local_health_stretches_probe_interval_and_timeout() -> None:
    h = Harness("me", PEERS)
    h.core._health.score = 3
    actions = h.fire("probe")
    start = h.now
    assert timer_at(actions, "probe") == pytest.approx(start + 4 * h.config.probe_interval)
    assert timer_at(actions, "probe-timeout") == pytest.approx(start + 4 * h.config.probe_timeout)


def suspect_target(h: Harness) -> str:
    target, _ = fail_probe(h)
    h.fire("probe")
    return target


def test_unrefuted_suspicion_becomes_failure_after_the_maximum_timeout() -> None:
    h = Harness("me", PEERS)
    target = suspect_target(h)
    suspected_at = h.now
    _, high = suspicion_bounds(h.config, len(PEERS) + 1)
    assert h.timers[f"suspect:{target}"] == pytest.approx(suspected_at + high)
    actions = h.fire(f"suspect:{target}")
    [event] = member_events(actions)
    assert event.kind is MemberEventKind.FAILED and event.old_state is State.SUSPECT
    assert h.core.state_of(target) is State.DEAD
    assert h.core.stats.deaths_declared == 1


def test_independent_confirmations_shrink_the_suspicion_timeout_to_the_minimum() -> None:
    h = Harness("me", PEERS)
    target = suspect_target(h)
    start = h.now
    low, high = suspicion_bounds(h.config, len(PEERS) + 1)
    deadlines = [h.timers[f"suspect:{target}"]]
    confirmers = [p for p in PEERS if p != target][: h.config.suspicion_confirmations]
    for confirmer in confirmers:
        h.receive(confirmer, Suspect(target, 0, confirmer))
        deadlines.append(h.timers[f"suspect:{target}"])
    assert deadlines[0] == pytest.approx(start + high)
    assert deadlines[-1] == pytest.approx(start + low)
    assert all(a > b for a, b in itertools.pairwise(deadlines))
    # A confirmer counts once, and confirmations beyond the expected number change nothing.
    h.receive("b", Suspect(target, 0, confirmers[0]))
    h.receive("b", Suspect(target, 0, "someone-else"))
    assert h.timers[f"suspect:{target}"] == deadlines[-1]


def test_refutation_by_higher_incarnation_clears_the_suspicion() -> None:
    h = Harness("me", PEERS)
    target = suspect_target(h)
    actions = h.receive(target, Alive(target, 1, addr_of(target), {}))
    [event] = member_events(actions)
    assert event.kind is MemberEventKind.RECOVERED
    assert h.core.state_of(target) is State.ALIVE
    assert f"suspect:{target}" not in h.timers
    # Stale news cannot bring the suspicion back.
    h.receive("b", Suspect(target, 0, "b"))
    assert h.core.state_of(target) is State.ALIVE


def test_buddy_system_tells_the_suspect_when_probing_it() -> None:
    h = Harness("me", ["b"])
    suspect_target(h)
    actions = h.fire("probe")
    [send] = sends(actions)
    assert isinstance(send.message, Compound)
    assert send.message.messages[0] == Suspect("b", 0, "me")
    assert isinstance(send.message.messages[1], Ping)


def test_relay_forwards_the_ack_with_the_requesters_sequence() -> None:
    h = Harness("me", PEERS)
    actions = h.receive("b", PingReq(777, "c", addr_of("c"), nack=True))
    [ping] = [p for p in sent_parts(actions, to="c") if isinstance(p, Ping)]
    assert ping.target == "c"
    actions = h.receive("c", Ack(ping.seq))
    assert Ack(777) in sent_parts(actions, to="b")
    assert not any(name.startswith("relay:") for name in h.timers)


def test_relay_nacks_before_the_requesters_period_ends() -> None:
    h = Harness("me", PEERS)
    h.receive("b", PingReq(777, "c", addr_of("c"), nack=True))
    [name] = [name for name in h.timers if name.startswith("relay:")]
    assert h.timers[name] - h.now < h.config.probe_interval - h.config.probe_timeout
    assert Nack(777) in sent_parts(h.fire(name), to="b")


def test_stale_timer_firings_are_ignored() -> None:
    h = Harness("me", PEERS)
    assert h.core.handle(TimerFired("probe"), 0.0) == []  # too early
    assert h.core.handle(TimerFired("no-such-timer"), 100.0) == []


def test_same_seed_same_decisions() -> None:
    def run(seed: int) -> list[Action]:
        h = Harness("me", PEERS, seed=seed, config=MembershipConfig())
        for _ in range(20):
            fail_probe(h, nacks=1)
        return h.log

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_every_datagram_fits_the_budget() -> None:
    config = MembershipConfig(randomize_probe_phase=False, max_datagram_bytes=600)
    h = Harness("me", PEERS, config=config)
    meta = {"images": [f"image-{i:03d}" for i in range(30)]}
    for index in range(60):
        h.receive("b", Alive(f"x{index:02d}", 1, ("10.9.0.1", 9000 + index), meta))
    actions = h.receive("b", Ping(1, "me")) + h.fire("gossip")
    compounds = [s for s in sends(actions) if isinstance(s.message, Compound)]
    assert compounds, "updates should be piggybacked"
    for send in sends(actions):
        assert len(msgpack.packb(send.message.to_wire())) <= 600
