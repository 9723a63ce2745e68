"""The lookup core: alpha requests in flight, refilled at once, done when the k closest answered."""

from __future__ import annotations

import pytest

from sdmesh.dht.ids import ID_SIZE
from sdmesh.dht.lookup import Contact, Lookup

TARGET = b"\x00" * ID_SIZE


def c(n: int) -> Contact:
    """Contact n is at XOR distance n from the target."""
    return Contact(n.to_bytes(ID_SIZE, "big"), "127.0.0.1", 1000 + n)


def ids(contacts: list[Contact]) -> list[int]:
    return [int.from_bytes(x.id, "big") for x in contacts]


def test_asks_the_closest_alpha_first() -> None:
    lookup = Lookup(TARGET, [c(n) for n in (9, 3, 7, 1, 5)], k=4, alpha=2)
    assert ids(lookup.next_queries()) == [1, 3]
    assert lookup.next_queries() == []  # alpha already in flight
    assert lookup.in_flight == 2


def test_a_new_request_starts_as_soon_as_one_answers() -> None:
    lookup = Lookup(TARGET, [c(n) for n in (1, 3, 5, 7)], k=4, alpha=2)
    lookup.next_queries()
    lookup.answered(c(3).id, [])
    assert ids(lookup.next_queries()) == [5]  # 1 is still outstanding; no waiting for it


def test_closer_contacts_from_an_answer_are_asked_next() -> None:
    lookup = Lookup(TARGET, [c(n) for n in (10, 20, 30)], k=3, alpha=1)
    assert ids(lookup.next_queries()) == [10]
    lookup.answered(c(10).id, [c(2), c(4)])
    assert ids(lookup.next_queries()) == [2]


def test_a_failure_frees_the_slot_and_the_next_closest_moves_up() -> None:
    lookup = Lookup(TARGET, [c(n) for n in (1, 2, 3)], k=2, alpha=2)
    lookup.next_queries()  # 1, 2
    lookup.failed(c(1).id)
    assert ids(lookup.next_queries()) == [3]
    lookup.answered(c(2).id)
    assert not lookup.finished
    lookup.answered(c(3).id)
    assert lookup.finished
    assert ids(lookup.closest()) == [2, 3]


def test_finished_does_not_wait_for_requests_outside_the_k_closest() -> None:
    lookup = Lookup(TARGET, [c(n) for n in (10, 11, 12)], k=2, alpha=3)
    lookup.next_queries()  # 10, 11, 12 all in flight
    lookup.answered(c(10).id, [c(1)])
    assert ids(lookup.next_queries()) == [1]
    lookup.answered(c(1).id)
    assert lookup.finished  # 11 and 12 are no longer among the 2 closest
    assert ids(lookup.closest()) == [1, 10]


def test_not_finished_while_one_of_the_k_closest_is_unanswered() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], k=2, alpha=1)
    lookup.next_queries()
    lookup.answered(c(1).id)
    assert not lookup.finished
    assert ids(lookup.next_queries()) == [2]


def test_everyone_failing_finishes_with_nothing() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], k=2, alpha=2)
    lookup.next_queries()
    lookup.failed(c(1).id)
    lookup.failed(c(2).id)
    assert lookup.finished
    assert lookup.closest() == []


def test_no_seeds_is_finished_at_once() -> None:
    assert Lookup(TARGET, [], k=3, alpha=3).finished


def test_own_id_and_known_contacts_are_not_added_twice() -> None:
    lookup = Lookup(TARGET, [c(1)], k=3, alpha=3, own_id=c(2).id)
    lookup.next_queries()
    lookup.answered(c(1).id, [c(1), c(2), c(3), c(3)])
    assert ids(lookup.next_queries()) == [3]
    assert lookup.queries == 2


def test_late_or_repeated_outcomes_are_ignored() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], k=2, alpha=1)
    lookup.next_queries()
    lookup.answered(c(2).id, [c(0)])  # never asked: ignored
    lookup.answered(c(1).id)
    lookup.failed(c(1).id)  # already settled: ignored
    assert lookup.in_flight == 0
    assert ids(lookup.next_queries()) == [2]


@pytest.mark.parametrize(("k", "alpha"), [(0, 1), (1, 0)])
def test_parameters_must_be_positive(k: int, alpha: int) -> None:
    with pytest.raises(ValueError):
        Lookup(TARGET, [], k=k, alpha=alpha)
