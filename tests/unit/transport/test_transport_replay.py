"""Sliding replay windows and the bounded table of sender sessions."""

from __future__ import annotations

import pytest

from sdmesh.transport.replay import ReplayGuard, ReplayWindow


def test_in_order_then_duplicates() -> None:
    window = ReplayWindow(64)
    assert all(window.accept(seq) for seq in range(10))
    assert not any(window.accept(seq) for seq in range(10))


def test_out_of_order_within_the_window_is_accepted_once() -> None:
    window = ReplayWindow(64)
    assert window.accept(50)
    assert window.accept(10)  # 40 behind: inside the window
    assert window.accept(49)
    assert not window.accept(10)
    assert not window.accept(49)


def test_window_edge() -> None:
    window = ReplayWindow(64)
    assert window.accept(100)
    assert window.check(100 - 63)
    assert not window.check(100 - 64)
    assert window.accept(37)
    assert not window.accept(36)


def test_a_jump_beyond_the_window_forgets_older_numbers() -> None:
    window = ReplayWindow(8)
    assert window.accept(1)
    assert window.accept(1000)
    assert not window.accept(1)  # too old now
    assert window.accept(999)


def test_check_does_not_record() -> None:
    window = ReplayWindow()
    assert window.check(5)
    assert window.check(5)
    assert window.accept(5)
    assert not window.check(5)


def test_negative_numbers_and_bad_sizes_are_refused() -> None:
    assert not ReplayWindow().accept(-1)
    with pytest.raises(ValueError):
        ReplayWindow(0)
    with pytest.raises(ValueError):
        ReplayGuard(max_senders=0)


def test_sessions_are_independent() -> None:
    guard = ReplayGuard()
    assert guard.accept(b"a", 0)
    assert guard.accept(b"b", 0)
    assert not guard.accept(b"a", 0)
    assert guard.check(b"c", 0)
    assert b"c" not in guard  # check never creates state


def test_table_is_bounded_and_evicts_the_least_recently_used() -> None:
    guard = ReplayGuard(max_senders=3)
    for sender in (b"a", b"b", b"c"):
        guard.accept(sender, 0)
    guard.accept(b"a", 1)  # a is now the most recently used
    guard.accept(b"d", 0)
    assert len(guard) == 3
    assert b"b" not in guard
    assert all(s in guard for s in (b"a", b"c", b"d"))


def test_a_flood_of_sessions_cannot_grow_the_table() -> None:
    guard = ReplayGuard(max_senders=100)
    for n in range(10_000):
        guard.accept(n.to_bytes(16, "big"), 0)
    assert len(guard) == 100


def test_a_restarted_sender_has_a_new_session_and_starts_over() -> None:
    guard = ReplayGuard()
    for seq in range(500):
        guard.accept(b"boot-1", seq)
    assert guard.accept(b"boot-2", 0)
