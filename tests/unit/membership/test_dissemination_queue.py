"""The broadcast queue: order, supersession, retransmit budget and byte budget."""

from __future__ import annotations

from sdmesh.membership import Alive, Dead, Rumor, RumorUpdate, Suspect
from sdmesh.membership.broadcast import BroadcastQueue
from sdmesh.membership.config import retransmit_limit
from sdmesh.membership.wire import packed_size


def alive(name: str, incarnation: int = 0, blob: str = "") -> Alive:
    return Alive(name, incarnation, ("10.0.0.1", 7946), {"blob": blob} if blob else {})


def names(taken: list[tuple[Alive | Suspect | Dead | RumorUpdate, int]]) -> list[str]:
    return [message.name for message, _ in taken if not isinstance(message, RumorUpdate)]


def test_newest_first_among_equally_transmitted() -> None:
    queue = BroadcastQueue()
    for name in ("a", "b", "c"):
        queue.enqueue(name, alive(name))
    assert names(queue.take(10_000, limit=10, max_count=2)) == ["c", "b"]
    # "a" has never been sent, so it now goes before the ones sent once.
    assert names(queue.take(10_000, limit=10, max_count=3)) == ["a", "c", "b"]


def test_newer_update_about_a_member_replaces_the_queued_one() -> None:
    queue = BroadcastQueue()
    queue.enqueue("a", alive("a", 1))
    queue.take(10_000, limit=10, max_count=10)
    queue.enqueue("a", Suspect("a", 1, "b"))
    assert len(queue) == 1
    taken = queue.take(10_000, limit=10, max_count=10)
    assert [message for message, _ in taken] == [Suspect("a", 1, "b")]


def test_updates_retire_after_the_retransmit_limit() -> None:
    queue = BroadcastQueue()
    queue.enqueue("a", alive("a"))
    sent = 0
    while queue:
        assert queue.take(10_000, limit=3, max_count=10)
        sent += 1
    assert sent == 3
    assert queue.take(10_000, limit=3, max_count=10) == []


def test_byte_budget_is_respected_and_sizes_are_exact() -> None:
    queue = BroadcastQueue()
    for index in range(30):
        queue.enqueue(f"n{index}", alive(f"n{index}", blob="x" * 100))
    taken = queue.take(500, limit=10, max_count=100)
    assert taken
    assert sum(size for _, size in taken) <= 500
    for message, size in taken:
        assert size == packed_size(message.to_wire())


def test_big_updates_are_skipped_for_small_ones_that_fit() -> None:
    queue = BroadcastQueue()
    queue.enqueue("small", alive("small"))
    queue.enqueue("big", alive("big", blob="x" * 400))
    assert names(queue.take(100, limit=10, max_count=10)) == ["small"]
    assert names(queue.take(1000, limit=10, max_count=10)) == ["big", "small"]


def test_retransmit_limit_grows_with_log_n() -> None:
    assert retransmit_limit(6, 1) == 6
    assert retransmit_limit(6, 9) == 6
    assert retransmit_limit(6, 10) == 12
    assert retransmit_limit(6, 99) == 12
    assert retransmit_limit(6, 1000) == 24


def test_rumors_share_the_queue_keyed_by_topic_and_key() -> None:
    queue = BroadcastQueue()
    queue.enqueue("a", alive("a"))
    queue.enqueue(("pools", "a"), RumorUpdate(Rumor("pools", "a", 1, "x", b""), 0))
    queue.enqueue(("pools", "a"), RumorUpdate(Rumor("pools", "a", 2, "x", b""), 0))
    assert len(queue) == 2  # a member name never collides with a rumor key
    taken = [message for message, _ in queue.take(10_000, limit=10, max_count=10)]
    assert taken == [RumorUpdate(Rumor("pools", "a", 2, "x", b""), 0), alive("a")]
