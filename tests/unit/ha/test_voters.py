"""The lease voter set: remembered across restarts, grown by the view, shrunk only by leaves."""

from __future__ import annotations

from sdmesh.ha.voters import VoterSet, decode_voters, encode_voters
from sdmesh.membership import Member, State


def member(name: str, state: State = State.ALIVE) -> Member:
    return Member(name, ("10.0.0.1", 7946), state=state)


def test_a_restart_starts_from_the_saved_voters_not_the_view_of_one() -> None:
    voters = VoterSet("a", frozenset({"a", "b", "c"}), peers_configured=True)
    assert not voters.update([member("a")])
    assert voters.current.names == {"a", "b", "c"} and not voters.current.solo


def test_a_joining_host_is_never_alone_and_saves_no_lone_set() -> None:
    voters = VoterSet("a", None, peers_configured=True)
    assert voters.current.names == {"a"} and not voters.current.solo
    assert not voters.worth_saving()
    assert voters.update([member("a"), member("b")]) and voters.worth_saving()


def test_a_standalone_host_is_a_mesh_of_one() -> None:
    voters = VoterSet("a", None, peers_configured=False)
    assert voters.current.solo and voters.worth_saving()
    voters.update([member("b")])
    assert not voters.current.solo


def test_reaped_members_keep_their_vote_leavers_lose_it() -> None:
    voters = VoterSet("a", None, peers_configured=True)
    voters.update([member("a"), member("b"), member("c", State.DEAD)])
    assert not voters.update([member("a"), member("b")])  # c reaped: still votes
    assert voters.current.names == {"a", "b", "c"}
    assert voters.update([member("a"), member("b"), member("c", State.LEFT)])
    assert voters.current.names == {"a", "b"} and not voters.current.solo
    voters.update([member("b", State.LEFT)])
    assert voters.current.names == {"a"} and voters.current.solo and voters.worth_saving()
    again = VoterSet("a", decode_voters(encode_voters(voters.current)), peers_configured=True)
    assert again.current.solo


def test_unreadable_saved_voters_are_none() -> None:
    for bad in (b"", b"{", b'{"voters": 3}', b'{"voters": [1]}', b"[]", None):
        assert decode_voters(bad) is None
