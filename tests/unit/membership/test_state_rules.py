"""Membership state rules: incarnations, refutation, leave, metadata, push-pull, join."""

from __future__ import annotations

import itertools

import pytest

from sdmesh.membership import (
    Alive,
    Dead,
    JoinCompleted,
    JoinFailed,
    JoinRequested,
    LeaveCompleted,
    LeaveRequested,
    MalformedMessage,
    Member,
    MemberEventKind,
    MembershipConfig,
    MetaUpdated,
    OpenStream,
    Phase,
    Ping,
    PushPull,
    Received,
    ReplyStream,
    State,
    StreamFailed,
    StreamReceived,
    Suspect,
)

from .harness import Harness, addr_of, member, member_events, sends, sent_parts

PEERS = ["b", "c", "d", "e"]


def test_suspicion_about_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    h = Harness("me", PEERS, incarnation=4)
    actions = h.receive("b", Suspect("me", 4, "b"), Ping(1, "me"))
    assert h.core.incarnation == 5
    assert h.core.stats.refutations == 1
    assert h.core.local_health == 1  # being suspected hints that we are the slow one
    # The refutation rides on the ack that answers the buddy's ping.
    assert Alive("me", 5, addr_of("me"), {}) in sent_parts(actions, to="b")


def test_death_notice_about_ourselves_is_refuted() -> None:
    h = Harness("me", PEERS)
    h.receive("b", Dead("me", 3, "b"))
    assert h.core.incarnation == 4
    assert h.core.state_of("me") is State.ALIVE


def test_stale_claim_about_ourselves_is_answered_directly() -> None:
    """A peer still spreading a suspicion we already refuted missed the refutation."""
    h = Harness("me", PEERS, incarnation=7)
    actions = h.receive("c", Suspect("me", 6, "b"))
    assert h.core.incarnation == 7
    assert Alive("me", 7, addr_of("me"), {}) in sent_parts(actions, to="c")


def test_alive_with_higher_incarnation_and_new_address_is_accepted() -> None:
    h = Harness("me", PEERS)
    new_addr = ("10.7.7.7", 7946)
    [event] = member_events(h.receive("c", Alive("b", 3, new_addr, {"rack": "r2"})))
    assert event.kind is MemberEventKind.UPDATED
    assert h.core.member("b") == Member("b", new_addr, 3, State.ALIVE, {"rack": "r2"})
    # Older or equal incarnations change nothing.
    h.receive("c", Alive("b", 3, addr_of("b"), {}))
    h.receive("c", Alive("b", 2, addr_of("b"), {}))
    assert h.core.member("b") == Member("b", new_addr, 3, State.ALIVE, {"rack": "r2"})


def test_dead_members_are_not_resurrected_by_old_news() -> None:
    h = Harness("me", PEERS)
    [event] = member_events(h.receive("c", Dead("b", 2, "c")))
    assert event.kind is MemberEventKind.FAILED
    h.receive("c", Alive("b", 2, addr_of("b"), {}))
    h.receive("c", Suspect("b", 2, "c"))
    assert h.core.state_of("b") is State.DEAD
    [event] = member_events(h.receive("c", Alive("b", 3, ("10.1.1.1", 1), {})))
    assert event.kind is MemberEventKind.JOINED and event.old_state is State.DEAD
    assert h.core.member("b") == Member("b", ("10.1.1.1", 1), 3, State.ALIVE, {})


def test_dead_members_are_not_probed() -> None:
    h = Harness("me", ["b", "c"])
    h.receive("c", Dead("b", 0, "c"))
    for _ in range(4):
        assert all(send.addr != addr_of("b") for send in sends(h.fire("probe")))


def test_left_member_is_never_suspected_and_reaped_later() -> None:
    config = MembershipConfig(randomize_probe_phase=False, left_reap_after=60, reap_interval=30)
    h = Harness("me", PEERS, config=config)
    [event] = member_events(h.receive("b", Dead("b", 1, "b", left=True)))
    assert event.kind is MemberEventKind.LEFT
    h.receive("c", Suspect("b", 1, "c"))
    h.receive("c", Dead("b", 1, "c"))
    assert h.core.state_of("b") is State.LEFT
    reaped = []
    while h.now < 100:
        reaped += [e for e in member_events(h.fire("reap")) if e.kind is MemberEventKind.REAPED]
    assert [e.member.name for e in reaped] == ["b"]
    assert h.core.member("b") is None


def test_graceful_leave() -> None:
    h = Harness("me", PEERS, incarnation=2)
    actions = h.feed(LeaveRequested())
    notice = Dead("me", 3, "me", left=True)
    pushed = [send for send in sends(actions) if notice in sent_parts([send])]
    assert len(pushed) == h.config.gossip_nodes
    assert h.core.phase is Phase.LEAVING
    assert "probe" not in h.timers
    # While leaving, suspicions about us are not refuted.
    h.receive("b", Suspect("me", 3, "b"))
    assert h.core.incarnation == 3
    actions = h.fire("leave")
    assert any(isinstance(action, LeaveCompleted) for action in actions)
    assert h.core.phase.value == Phase.STOPPED.value
    assert h.timers == {}
    assert h.core.handle(Received(addr_of("b"), Ping(1, "me")), h.now) == []


def test_metadata_update_bumps_incarnation_and_is_gossiped() -> None:
    h = Harness("me", PEERS)
    meta = {"capacity": {"vcpus": 32, "vcpus_free": 8}, "images": ["debian-12"]}
    h.feed(MetaUpdated(meta))
    assert h.core.incarnation == 1
    assert h.core.member("me") == Member("me", addr_of("me"), 1, State.ALIVE, meta)
    assert Alive("me", 1, addr_of("me"), meta) in sent_parts(h.fire("gossip"))


def test_metadata_update_is_seen_by_others() -> None:
    h = Harness("me", PEERS)
    [event] = member_events(h.receive("b", Alive("b", 1, addr_of("b"), {"images": ["x"]})))
    assert event.kind is MemberEventKind.UPDATED
    assert event.member.meta == {"images": ["x"]}


def test_oversized_metadata_is_refused() -> None:
    h = Harness("me", PEERS)
    with pytest.raises(MalformedMessage):
        h.feed(MetaUpdated({"images": ["x" * 300] * 10}))
    assert h.core.incarnation == 0


def test_metadata_must_fit_a_datagram() -> None:
    config = MembershipConfig(randomize_probe_phase=False, max_datagram_bytes=400)
    h = Harness("me", PEERS, config=config)
    with pytest.raises(ValueError):
        h.feed(MetaUpdated({"images": [f"image-{i:02d}" for i in range(20)]}))
    h.feed(MetaUpdated({"images": ["image-00"]}))
    assert h.core.incarnation == 1


def state_of_peer(*members: Member, sender: str = "b", reply: bool = False) -> PushPull:
    return PushPull(sender, join=False, reply=reply, members=members)


def test_push_pull_request_is_merged_and_answered_with_our_state() -> None:
    h = Harness("me", ["b"])
    request = state_of_peer(member("b"), member("new", 2), Member("c", addr_of("c"), 1, State.DEAD))
    actions = h.feed(StreamReceived(addr_of("b"), request, stream_id=12))
    [reply] = [a for a in actions if isinstance(a, ReplyStream)]
    assert reply.stream_id == 12 and reply.message.reply and reply.message.sender == "me"
    assert {m.name for m in reply.message.members} == {"me", "b", "new"}
    assert [e.member.name for e in member_events(actions)] == ["new"]
    assert h.core.state_of("c") is None  # a death notice about a stranger teaches nothing


def test_remote_death_verdict_only_makes_us_suspect() -> None:
    h = Harness("me", PEERS)
    dead_c = Member("c", addr_of("c"), 0, State.DEAD)
    h.feed(StreamReceived(addr_of("b"), state_of_peer(member("b"), dead_c), stream_id=1))
    assert h.core.state_of("c") is State.SUSPECT


def test_join_pushes_state_to_each_seed_and_reports_the_first_answer() -> None:
    h = Harness("me")
    seeds = (addr_of("b"), addr_of("c"), addr_of("me"))
    actions = h.feed(JoinRequested(seeds))
    opened = [a for a in actions if isinstance(a, OpenStream)]
    assert [a.addr for a in opened] == [addr_of("b"), addr_of("c")]
    assert all(a.message.join and not a.message.reply for a in opened)
    reply = PushPull("b", join=True, reply=True, members=(member("b"), member("c")))
    actions = h.feed(StreamReceived(addr_of("b"), reply))
    assert JoinCompleted(addr_of("b"), 3) in actions
    assert h.core.state_of("c") is State.ALIVE
    assert not any(isinstance(a, JoinCompleted) for a in h.feed(StreamFailed(addr_of("c"))))


def test_join_fails_when_no_seed_answers() -> None:
    h = Harness("me")
    h.feed(JoinRequested((addr_of("b"), addr_of("c"))))
    assert h.feed(StreamFailed(addr_of("b"))) == []
    assert JoinFailed((addr_of("b"), addr_of("c"))) in h.feed(StreamFailed(addr_of("c")))


def test_failed_join_is_retried_with_backoff_until_a_seed_answers() -> None:
    """Hosts boot in any order: a member whose seed is not up yet keeps trying it."""
    h = Harness("me")
    h.feed(JoinRequested((addr_of("b"),)))
    gaps = []
    for _ in range(4):
        h.feed(StreamFailed(addr_of("b")))
        assert "join-retry" in h.timers
        gaps.append(h.timers["join-retry"] - h.now)
        opened = [a for a in h.fire("join-retry") if isinstance(a, OpenStream)]
        assert [a.addr for a in opened] == [addr_of("b")] and opened[0].message.join
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    reply = PushPull("b", join=True, reply=True, members=(member("b"),))
    assert JoinCompleted(addr_of("b"), 2) in h.feed(StreamReceived(addr_of("b"), reply))
    assert "join-retry" not in h.timers


def test_no_join_retry_once_someone_else_reached_us() -> None:
    """A seed that is down does not matter when another member found us: gossip goes on."""
    h = Harness("me")
    h.feed(JoinRequested((addr_of("b"),)))
    h.feed(StreamReceived(addr_of("c"), PushPull("c", False, False, (member("c"),))))
    h.feed(StreamFailed(addr_of("b")))
    assert "join-retry" not in h.timers


def test_join_retry_stops_on_leave() -> None:
    h = Harness("me")
    h.feed(JoinRequested((addr_of("b"),)))
    h.feed(StreamFailed(addr_of("b")))
    h.feed(LeaveRequested())
    assert "join-retry" not in h.timers


def test_restart_on_a_new_address_refutes_the_old_life() -> None:
    """A restarted node learns from a seed that the mesh remembers it at incarnation 5 on
    its old address: it announces incarnation 6 and pushes its state once more."""
    h = Harness("me", incarnation=0)
    h.feed(JoinRequested((addr_of("b"),)))
    old_me = Member("me", ("10.99.0.1", 7946), 5, State.DEAD)
    reply = PushPull("b", join=True, reply=True, members=(member("b"), old_me))
    actions = h.feed(StreamReceived(addr_of("b"), reply))
    assert h.core.incarnation == 6
    [again] = [a for a in actions if isinstance(a, OpenStream)]
    assert again.addr == addr_of("b")
    assert Member("me", addr_of("me"), 6, State.ALIVE, {}) in again.message.members


def test_restart_before_anyone_noticed_is_refuted_too() -> None:
    """Same incarnation, different address: the mesh's record of us is stale all the same."""
    h = Harness("me", incarnation=0)
    h.feed(JoinRequested((addr_of("b"),)))
    old_me = Member("me", ("10.99.0.1", 7946), 0, State.ALIVE)
    reply = PushPull("b", join=True, reply=True, members=(member("b"), old_me))
    actions = h.feed(StreamReceived(addr_of("b"), reply))
    assert h.core.incarnation == 1
    assert any(isinstance(a, OpenStream) and a.addr == addr_of("b") for a in actions)
