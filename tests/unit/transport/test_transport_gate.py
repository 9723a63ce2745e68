"""The connection gate: limits before authentication, decided without sockets."""

from __future__ import annotations

import pytest

from sdmesh.transport.gate import ConnectionGate


def test_a_source_holds_a_bounded_number_of_pending_connections() -> None:
    gate = ConnectionGate(max_connections=100, max_pending_per_source=3)
    tickets = [gate.admit("10.0.0.9").ticket for _ in range(3)]
    fourth = gate.admit("10.0.0.9")
    assert fourth.evict == tickets[0]  # its own oldest gives way
    assert gate.pending == 3 and gate.evicted == 1
    other = gate.admit("10.0.0.2")
    assert other.ticket is not None and other.evict is None


def test_a_full_table_evicts_the_oldest_pending_never_a_peer() -> None:
    gate = ConnectionGate(max_connections=3, max_pending_per_source=10)
    peer = gate.admit("10.0.0.1").ticket
    assert peer is not None
    gate.authenticated(peer)
    idle = [gate.admit(f"10.0.1.{n}").ticket for n in range(2)]
    newcomer = gate.admit("10.0.0.3")
    assert newcomer.evict == idle[0]
    assert newcomer.ticket is not None
    gate.authenticated(newcomer.ticket)
    last = gate.admit("10.0.0.4")
    assert last.evict == idle[1]
    assert last.ticket is not None
    gate.authenticated(last.ticket)
    assert gate.admit("10.0.0.5").ticket is None  # every connection is a peer's: refused
    assert gate.refused == 1 and len(gate) == 3


def test_closing_forgets_and_is_idempotent() -> None:
    gate = ConnectionGate(max_connections=2, max_pending_per_source=1)
    ticket = gate.admit("a").ticket
    assert ticket is not None
    gate.closed(ticket)
    gate.closed(ticket)
    assert len(gate) == 0 and gate.pending == 0
    assert gate.admit("a").evict is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectionGate(max_connections=0)


def test_a_per_source_cap_counts_every_connection_and_evicts_pending_first() -> None:
    gate = ConnectionGate(max_connections=100, max_pending_per_source=10, max_per_source=3)
    first, second = gate.admit("a").ticket, gate.admit("a").ticket
    assert first is not None and second is not None
    gate.authenticated(first)
    gate.authenticated(second)
    third = gate.admit("a")
    assert third.ticket is not None and third.evict is None and gate.held("a") == 3
    fourth = gate.admit("a")  # at the cap: its pending one gives way
    assert fourth.evict == third.ticket and fourth.ticket is not None
    gate.authenticated(fourth.ticket)
    assert gate.admit("a").ticket is None  # three established: refused
    assert gate.admit("b").ticket is not None
    gate.closed(first)
    assert gate.held("a") == 2 and gate.admit("a").ticket is not None
