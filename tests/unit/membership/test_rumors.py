"""Rumors in the core: publication, last-writer-wins, the Lamport clock, push-pull, limits,
eviction and expiry."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmesh.membership import (
    Action,
    LeaveRequested,
    MalformedMessage,
    MembershipConfig,
    Phase,
    Publish,
    PushPull,
    ReplyStream,
    Rumor,
    RumorLearned,
    RumorUpdate,
    StreamReceived,
    decode_packet,
    decode_stream,
)
from sdmesh.membership.core import REGOSSIP_PER_MERGE
from sdmesh.membership.rumors import RumorStore
from sdmesh.membership.wire import packed_size

from .harness import Harness, addr_of, member, sends, sent_parts

PEERS = ["b", "c", "d", "e"]


def learned(actions: list[Action]) -> list[Rumor]:
    return [action.rumor for action in actions if isinstance(action, RumorLearned)]


def rumor(
    key: str, ltime: int, origin: str = "b", payload: bytes = b"x", topic: str = "t"
) -> Rumor:
    return Rumor(topic, key, ltime, origin, payload)


def push_pull(*updates: RumorUpdate, reply: bool = False, join: bool = False) -> PushPull:
    return PushPull("b", join=join, reply=reply, members=(member("b"),), rumors=updates)


def queued_rumors(h: Harness) -> list[Rumor]:
    """Rumors the core piggybacks on its next datagram (one probe tick)."""
    return [p.rumor for p in sent_parts(h.fire("probe")) if isinstance(p, RumorUpdate)]


# ------------------------------------------------------------------ publication


def test_publish_stamps_stores_reports_and_gossips() -> None:
    h = Harness("me", PEERS)
    actions = h.feed(Publish("pools", "pool-7", b"terminated"))
    expected = Rumor("pools", "pool-7", 1, "me", b"terminated")
    assert learned(actions) == [expected]
    assert h.core.rumors() == [expected]
    assert h.core.rumor("pools", "pool-7") == expected
    assert h.core.rumor_clock == 1
    assert queued_rumors(h) == [expected]
    # A second publication of the same key supersedes the first everywhere.
    h.feed(Publish("pools", "pool-7", b"gone"))
    assert h.core.rumors() == [Rumor("pools", "pool-7", 2, "me", b"gone")]


def test_rumors_can_be_listed_by_topic() -> None:
    h = Harness("me", PEERS)
    for topic, key in [("pools", "p2"), ("tombstones", "p1"), ("pools", "p1")]:
        h.feed(Publish(topic, key, b""))
    assert [(r.topic, r.key) for r in h.core.rumors()] == [
        ("pools", "p1"),
        ("pools", "p2"),
        ("tombstones", "p1"),
    ]
    assert [r.key for r in h.core.rumors("tombstones")] == ["p1"]
    assert h.core.rumors("nothing") == []


def test_rumor_is_gossiped_a_logarithmic_number_of_times() -> None:
    h = Harness("me", PEERS)
    h.feed(Publish("t", "k", b"v"))
    sent = 0
    for _ in range(100):
        if not h.core.pending_broadcasts:
            break
        sent += sum(isinstance(p, RumorUpdate) for p in sent_parts(h.fire("probe")))
    # retransmit_mult * ceil(log10(5 + 1)) for a mesh of five.
    assert sent == h.config.retransmit_mult


@pytest.mark.parametrize(
    ("topic", "key", "payload"),
    [
        ("t" * 33, "k", b""),
        ("é" * 17, "k", b""),  # 17 characters, 34 bytes
        ("t", "k" * 129, b""),
        ("t", "k", bytes(641)),
        ("", "k", b""),
        ("t", "", b""),
        (b"t", "k", b""),
        ("t", 7, b""),
        ("t", "k", "text"),
        ("t", "k", bytearray(3)),
        ("\ud800", "k", b""),
    ],
    ids=[
        "topic 33 bytes",
        "topic multibyte",
        "key 129 bytes",
        "payload 641 bytes",
        "empty topic",
        "empty key",
        "topic bytes",
        "key int",
        "payload str",
        "payload bytearray",
        "lone surrogate",
    ],
)
def test_publish_outside_the_limits_raises_and_changes_nothing(
    topic: object, key: object, payload: object
) -> None:
    h = Harness("me", PEERS)
    with pytest.raises(ValueError):
        h.feed(Publish(topic, key, payload))  # type: ignore[arg-type]
    assert h.core.rumors() == [] and h.core.rumor_clock == 0
    assert learned(h.feed(Publish("t", "k", b""))) == [Rumor("t", "k", 1, "me", b"")]


def test_largest_rumor_fits_a_datagram_next_to_a_probe() -> None:
    name = "n" * 128
    h = Harness(name, PEERS)
    h.feed(Publish("t" * 32, "k" * 128, bytes(640)))
    actions = h.fire("probe")
    assert any(isinstance(p, RumorUpdate) for p in sent_parts(actions))
    for send in sends(actions):
        assert len(msgpack.packb(send.message.to_wire())) <= h.config.max_datagram_bytes


def test_publish_that_cannot_fit_a_small_datagram_budget_is_refused() -> None:
    config = MembershipConfig(randomize_probe_phase=False, max_datagram_bytes=600)
    h = Harness("me", PEERS, config=config)
    with pytest.raises(ValueError, match="datagram budget"):
        h.feed(Publish("t", "k", bytes(640)))
    h.feed(Publish("t", "k", bytes(64)))
    assert len(h.core.rumors()) == 1


def test_publish_on_a_stopped_core_is_still_checked_but_ignored() -> None:
    h = Harness("me", PEERS)
    h.feed(LeaveRequested())
    h.fire("leave")
    assert h.core.phase is Phase.STOPPED
    with pytest.raises(ValueError):
        h.feed(Publish("t", "k", bytes(641)))
    assert h.feed(Publish("t", "k", b"")) == []


# ------------------------------------------------------------------ ordering


def test_newer_rumor_wins_and_older_is_ignored() -> None:
    h = Harness("me", PEERS)
    assert learned(h.receive("b", RumorUpdate(rumor("k", 5), 0))) == [rumor("k", 5)]
    assert learned(h.receive("c", RumorUpdate(rumor("k", 4, "c"), 0))) == []
    assert learned(h.receive("c", RumorUpdate(rumor("k", 5), 0))) == []  # a duplicate
    assert learned(h.receive("c", RumorUpdate(rumor("k", 6, "a"), 0))) == [rumor("k", 6, "a")]
    assert h.core.rumors() == [rumor("k", 6, "a")]


@pytest.mark.parametrize("first_b", [True, False])
def test_equal_ltimes_are_ordered_by_origin_whatever_the_arrival_order(first_b: bool) -> None:
    h = Harness("me", PEERS)
    pair = [rumor("k", 3, "b", b"from b"), rumor("k", 3, "c", b"from c")]
    for r in pair if first_b else reversed(pair):
        h.receive("d", RumorUpdate(r, 0))
    assert h.core.rumors() == [pair[1]]


def test_same_ltime_and_origin_is_settled_by_payload() -> None:
    """Only a restarted origin reusing an ltime causes this; every member picks the same."""
    h = Harness("me", PEERS)
    h.receive("d", RumorUpdate(rumor("k", 3, "b", b"zz"), 0))
    h.receive("d", RumorUpdate(rumor("k", 3, "b", b"aa"), 0))
    assert h.core.rumors() == [rumor("k", 3, "b", b"zz")]


def test_lamport_clock_follows_every_rumor_seen() -> None:
    h = Harness("me", PEERS)
    h.receive("b", RumorUpdate(rumor("k", 41), 0))
    [mine] = learned(h.feed(Publish("t", "other", b"")))
    assert mine.ltime == 42
    # Rumors that lose still move the clock forward.
    h.feed(Publish("t", "k", b"newest"))
    h.receive("b", RumorUpdate(rumor("k", 99, "b"), 0))
    h.receive("c", RumorUpdate(rumor("k", 98, "c"), 0))
    assert h.core.rumor_clock == 99
    h.receive("c", RumorUpdate(rumor("x", 120, "c"), 0))
    # Our publication beats the value we hold, however it got there.
    [mine] = learned(h.feed(Publish("t", "k", b"mine")))
    assert mine.ltime == 121
    assert h.core.rumor("t", "k") == mine


def test_news_is_passed_on_but_stale_news_is_not() -> None:
    h = Harness("me", PEERS)
    h.receive("b", RumorUpdate(rumor("k", 5), 0))
    assert queued_rumors(h) == [rumor("k", 5)]
    h2 = Harness("me", PEERS)
    h2.feed(Publish("t", "k", b""))
    h2.receive("b", RumorUpdate(rumor("k", 1, "a"), 0))  # older than ours: not news
    assert queued_rumors(h2) == [Rumor("t", "k", 1, "me", b"")]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(
            rumor,
            key=st.sampled_from(["k1", "k2", "k3"]),
            ltime=st.integers(1, 5),
            origin=st.sampled_from(["a", "b", "c"]),
            payload=st.sampled_from([b"", b"x", b"y"]),
        ),
        max_size=20,
    ),
    st.randoms(use_true_random=False),
)
def test_any_delivery_order_gives_the_same_map(rumors: list[Rumor], shuffle: random.Random) -> None:
    """Last-writer-wins is commutative: members converge whatever order news arrives in."""
    maps = []
    for order in (rumors, shuffle.sample(rumors, len(rumors))):
        h = Harness("me", PEERS)
        for r in order:
            h.receive("b", RumorUpdate(r, 0))
        maps.append(h.core.rumors())
    assert maps[0] == maps[1]
    for r in maps[0]:
        assert r == max((c for c in rumors if c.key == r.key), key=lambda c: c.rank)


# ------------------------------------------------------------------ push-pull


def reply_of(actions: list[Action]) -> PushPull:
    [reply] = [a for a in actions if isinstance(a, ReplyStream)]
    return reply.message


def test_push_pull_request_merges_rumors_and_answers_with_ours() -> None:
    h = Harness("me", PEERS)
    h.feed(Publish("t", "mine", b"1"))
    h.receive("c", RumorUpdate(rumor("seen", 7, "c"), 0))
    request = push_pull(RumorUpdate(rumor("theirs", 3), 0), RumorUpdate(rumor("seen", 2), 0))
    actions = h.feed(StreamReceived(addr_of("b"), request, stream_id=3))
    assert learned(actions) == [rumor("theirs", 3)]
    answer = reply_of(actions)
    # Newest first, all of them (the peer may lack any).
    assert [u.rumor.key for u in answer.rumors] == ["seen", "theirs", "mine"]
    assert decode_stream(msgpack.unpackb(msgpack.packb(answer.to_wire()))) == answer


def test_join_reply_rumors_are_not_gossiped_but_other_push_pulls_are() -> None:
    h = Harness("me", PEERS)
    h.feed(StreamReceived(addr_of("b"), push_pull(RumorUpdate(rumor("j", 1), 0), join=True)))
    assert h.core.rumor("t", "j") is not None
    h.feed(StreamReceived(addr_of("b"), push_pull(RumorUpdate(rumor("a", 1), 0), reply=True)))
    h.feed(
        StreamReceived(
            addr_of("b"), push_pull(RumorUpdate(rumor("r", 1), 0), reply=True, join=True)
        )
    )
    assert [r.key for r in queued_rumors(h)] == ["a", "j"]


def test_a_flood_of_news_by_push_pull_is_left_to_anti_entropy() -> None:
    h = Harness("me", PEERS)
    many = [RumorUpdate(rumor(f"k{i:03d}", i + 1), 0) for i in range(100)]
    before = h.core.pending_broadcasts
    actions = h.feed(StreamReceived(addr_of("b"), push_pull(*many), stream_id=1))
    assert len(learned(actions)) == 100
    assert h.core.pending_broadcasts - before == REGOSSIP_PER_MERGE
    gossiped = set()
    for _ in range(200):
        if not h.core.pending_broadcasts:
            break
        gossiped |= {r.ltime for r in queued_rumors(h)}
    assert gossiped == set(range(101 - REGOSSIP_PER_MERGE, 101))  # the newest ones


def test_push_pull_stays_within_the_stream_budget_newest_first() -> None:
    config = MembershipConfig(randomize_probe_phase=False, max_stream_bytes=8000)
    h = Harness("me", PEERS, config=config)
    for index in range(40):
        h.feed(Publish("t", f"k{index:02d}", bytes(400)))
    answer = reply_of(h.feed(StreamReceived(addr_of("b"), push_pull(), stream_id=1)))
    assert len(msgpack.packb(answer.to_wire())) <= 8000
    sent = [u.rumor.ltime for u in answer.rumors]
    assert 10 < len(sent) < 40
    assert sent == list(range(40, 40 - len(sent), -1))
    assert len(answer.members) == 5  # members are never left out


def test_push_pull_without_rumors_keeps_the_old_wire_form() -> None:
    h = Harness("me", PEERS)
    answer = reply_of(h.feed(StreamReceived(addr_of("b"), push_pull(), stream_id=1)))
    assert len(answer.to_wire()) == 5
    assert decode_stream(answer.to_wire()) == answer


# ------------------------------------------------------------------ limits


def test_full_map_evicts_the_oldest_and_refuses_older_news() -> None:
    config = MembershipConfig(randomize_probe_phase=False, max_rumors=3)
    h = Harness("me", PEERS, config=config)
    for ltime, key in [(5, "a"), (2, "b"), (9, "c"), (7, "d")]:
        h.receive("b", RumorUpdate(rumor(key, ltime), 0))
    assert {r.key for r in h.core.rumors()} == {"a", "c", "d"}
    # Older than everything held: it would be evicted at once, so it is not learned.
    assert learned(h.receive("b", RumorUpdate(rumor("e", 3), 0))) == []
    # A newer value of a held key replaces it without evicting anything.
    assert learned(h.receive("b", RumorUpdate(rumor("a", 8), 0))) == [rumor("a", 8)]
    assert {r.key for r in h.core.rumors()} == {"a", "c", "d"}
    # Our own publication is always newest.
    h.feed(Publish("t", "mine", b""))
    assert {r.key for r in h.core.rumors()} == {"a", "c", "mine"}


def test_rumors_expire_after_the_ttl_counted_from_publication() -> None:
    config = MembershipConfig(randomize_probe_phase=False, rumor_ttl=100.0, reap_interval=10.0)
    h = Harness("me", PEERS, config=config)
    h.feed(Publish("t", "mine", b""))
    h.receive("b", RumorUpdate(rumor("old", 1), 60))  # published 60 s before we heard of it
    while h.now < 30:
        h.fire("reap")
    assert [r.key for r in h.core.rumors()] == ["mine", "old"]
    answer = reply_of(h.feed(StreamReceived(addr_of("b"), push_pull(), stream_id=1)))
    assert {u.rumor.key: u.age for u in answer.rumors} == {"mine": 30, "old": 90}
    h.fire("reap")
    assert h.now == 40 and [r.key for r in h.core.rumors()] == ["mine"]
    while h.now < 100:
        h.fire("reap")
    assert h.core.rumors() == []


def test_expired_rumors_are_neither_sent_nor_taken_back() -> None:
    config = MembershipConfig(randomize_probe_phase=False, rumor_ttl=100.0)
    h = Harness("me", PEERS, config=config)
    h.feed(Publish("t", "mine", b""))
    h.advance(100.5)
    answer = reply_of(h.feed(StreamReceived(addr_of("b"), push_pull(), stream_id=1)))
    assert answer.rumors == ()
    # A peer that learned it late reports its true age: it stays dead here.
    late = RumorUpdate(Rumor("t", "late", 1, "c", b""), 100)
    assert learned(h.feed(StreamReceived(addr_of("b"), push_pull(late), stream_id=2))) == []
    assert learned(h.receive("b", late)) == []
    assert h.core.rumor_clock == 1


def test_ages_are_rounded_up_so_relays_never_rejuvenate() -> None:
    h = Harness("me", PEERS)
    h.receive("b", RumorUpdate(rumor("k", 1), 10))
    h.advance(0.25)
    answer = reply_of(h.feed(StreamReceived(addr_of("b"), push_pull(), stream_id=1)))
    assert answer.rumors[0].age == 11  # 10.25 s


def test_store_eviction_index_stays_bounded() -> None:
    """Replaced and evicted values leave stale index entries; they are purged in time."""
    store = RumorStore(capacity=10, ttl=100.0)
    rng = random.Random(5)
    newest: dict[str, int] = {}
    for ltime in range(1, 2000):
        key = f"k{rng.randrange(30)}"
        store.offer(rumor(key, ltime), 0.0, 0.0)
        newest[key] = ltime
        assert len(store._by_rank) <= 2 * 10 + 64
    assert sorted(r.ltime for r in store.rumors()) == sorted(newest.values())[-10:]


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    "fields",
    [
        ["t" * 33, "k", 1, "b", b"", 0],
        ["t", "k" * 129, 1, "b", b"", 0],
        ["t", "k", 1, "b", bytes(641), 0],
        ["t", "k", 1, "b", "text", 0],
        ["t", "k", 0, "b", b"", 0],
        ["t", "k", -1, "b", b"", 0],
        ["t", "k", 2**64, "b", b"", 0],
        ["t", "k", True, "b", b"", 0],
        ["t", "k", 1, "", b"", 0],
        ["t", "k", 1, "b", b"", -1],
        ["t", "k", 1, "b", b"", 1.5],
        ["t", "k", 1, "b", b""],
        [None, "k", 1, "b", b"", 0],
    ],
)
def test_malformed_rumors_from_the_network_are_refused(fields: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        decode_packet([10, *fields])
    with pytest.raises(MalformedMessage):
        decode_stream([9, "b", False, False, [], [fields]])
    # Inside a compound, the whole datagram is dropped, as for any malformed part.
    with pytest.raises(MalformedMessage):
        decode_packet([8, [[3, 1], [10, *fields]]])


def test_rumor_message_sizes_are_as_budgeted() -> None:
    biggest = RumorUpdate(Rumor("t" * 32, "k" * 128, 2**64 - 1, "n" * 128, bytes(640)), 2**32 - 1)
    assert packed_size(biggest.to_wire()) < 1100


def test_a_rumor_far_above_the_clock_is_refused_and_counted() -> None:
    """A key holder's rumor at the largest Lamport time would exhaust every member's clock:
    no publication (pool states, tombstones, revocations) would ever be possible again."""
    from sdmesh.membership.core_rules import MAX_LTIME_STEP

    h = Harness("me", PEERS)
    h.receive("b", RumorUpdate(rumor("k", 41), 0))
    for forged in (2**64 - 1, 41 + MAX_LTIME_STEP + 1):
        h.receive("mallory", RumorUpdate(rumor("k", forged, "mallory", b"forged"), 0))
        h.feed(StreamReceived(addr_of("c"), push_pull(RumorUpdate(rumor("j", forged), 0)), 7))
    assert h.core.rumor_clock == 41
    assert h.core.rumor("t", "k") == rumor("k", 41)
    assert h.core.rumor("t", "j") is None
    assert h.core.stats.rumors_refused == 4
    [mine] = learned(h.feed(Publish("t", "k", b"mine")))
    assert mine.ltime == 42
    # A big but honest step (a member that was away while the mesh published) is taken.
    h.receive("c", RumorUpdate(rumor("k", 42 + MAX_LTIME_STEP, "c"), 0))
    assert h.core.rumor_clock == 42 + MAX_LTIME_STEP
