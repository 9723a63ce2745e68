"""Host identities in membership: the checker alone, then the core consulting it.

Sans-IO throughout: keys are made in memory, the wall clock is pinned, and events are fed by
hand. Each refusal is checked to leave the member table as it was and to be counted.
"""

from __future__ import annotations

import random

import pytest

from sdmesh.membership import (
    Alive,
    Dead,
    LeaveRequested,
    Member,
    Membership,
    MembershipConfig,
    Ping,
    PushPull,
    Received,
    Revoke,
    Rumor,
    Send,
    Start,
    State,
    StreamReceived,
    decode,
)
from sdmesh.membership.identity import REVOKE_TOPIC, IdentityChecker
from sdmesh.membership.messages import RumorUpdate
from sdmesh.trust.identity import (
    HostCertificate,
    Revocation,
    alive_bytes,
    meta_digest,
    sign_certificate,
    sign_revocation,
)
from sdmesh.trust.keys import OperatorKey

NOW = 1_800_000_000.0
CA = OperatorKey.generate("cluster-ca")
OTHER_CA = OperatorKey.generate("other-ca")
KEYS = {name: OperatorKey.generate(name) for name in ("a", "b", "c", "mallory")}
SERIALS = {"a": 1, "b": 2, "c": 3, "mallory": 4}
ADDR = {"a": ("10.0.0.1", 7946), "b": ("10.0.0.2", 7946), "mallory": ("10.0.0.66", 7946)}


def cert(name: str, ca: OperatorKey = CA, *, days: int = 30) -> HostCertificate:
    start = int(NOW) - 60
    return sign_certificate(ca, name, KEYS[name].public, SERIALS[name], start, start + days * 86400)


def checker(name: str, *, wall: float = NOW, ca: OperatorKey = CA) -> IdentityChecker:
    return IdentityChecker(CA.public, KEYS[name], cert(name, ca), wall=lambda: wall)


def alive(name: str, incarnation: int, *, signer: str | None = None, addr: str = "") -> Alive:
    """``signer`` (default ``name``) signs an alive claim for ``name``."""
    # The checker only signs its own name; a forger signs any claim with its key and cert.
    speaker = signer or name
    where = ADDR[addr or name]
    message = alive_bytes(name, incarnation, where[0], where[1], meta_digest({}))
    proof = KEYS[speaker].sign(message) + cert(speaker).encode()
    return Alive(name, incarnation, where, {}, proof)


# ---------------------------------------------------------------- the checker alone


def test_a_member_own_alive_is_accepted_and_then_cached() -> None:
    check = checker("a")
    claim = alive("b", 3)
    assert check.check_alive("b", 3, claim.addr, {}, claim.proof)
    # Cached: a later copy of the same claim verifies without Ed25519 (a swapped key
    # would make a fresh verification fail).
    check._certs.clear()
    assert check.check_alive("b", 3, claim.addr, {}, claim.proof)
    assert sum(check.refusals.as_dict().values()) == 0


def test_alive_for_another_name_with_ones_own_certificate_is_refused() -> None:
    check = checker("a")
    forged = alive("b", 9, signer="mallory", addr="mallory")
    assert not check.check_alive("b", 9, forged.addr, {}, forged.proof)
    assert check.refusals.wrong_name == 1


def test_alive_signed_by_another_key_under_the_right_certificate_is_forged() -> None:
    check = checker("a")
    honest = alive("b", 9)
    mallory_sig = alive("b", 9, signer="mallory", addr="mallory").proof[:64]
    assert not check.check_alive("b", 9, ADDR["mallory"], {}, mallory_sig + honest.proof[64:])
    # and the right proof does not cover another address (b's address cannot flap)
    assert not check.check_alive("b", 9, ADDR["mallory"], {}, honest.proof)
    assert check.refusals.forged == 2


def test_certificate_from_another_ca_is_refused() -> None:
    check = checker("a")
    foreign = IdentityChecker(CA.public, KEYS["b"], cert("b", OTHER_CA), wall=lambda: NOW)
    proof = foreign.prove_alive(1, ADDR["b"], {})
    assert not check.check_alive("b", 1, ADDR["b"], {}, proof)
    assert check.refusals.bad_certificate == 1


def test_expired_certificate_is_refused() -> None:
    later = checker("a", wall=NOW + 31 * 86400)
    claim = alive("b", 1)
    assert not later.check_alive("b", 1, claim.addr, {}, claim.proof)
    assert later.refusals.bad_certificate == 1


def test_unsigned_alive_is_refused() -> None:
    check = checker("a")
    assert not check.check_alive("b", 1, ADDR["b"], {}, b"")
    assert check.refusals.unsigned == 1


def test_replayed_older_incarnation_is_refused() -> None:
    check = checker("a")
    old, new = alive("b", 3), alive("b", 5)
    assert check.check_alive("b", 5, new.addr, {}, new.proof)
    assert not check.check_alive("b", 3, old.addr, {}, old.proof)
    assert check.refusals.replay == 1
    check.forget("b")  # reaped: a restart at a low incarnation is welcome again
    assert check.check_alive("b", 3, old.addr, {}, old.proof)


def test_leave_must_be_signed_by_the_member() -> None:
    check = checker("a")
    real = checker("b").prove_leave(4)
    forged = checker("mallory").prove_leave(4)
    assert not check.check_leave("b", 4, forged)
    assert not check.check_leave("b", 5, real)  # signed for another incarnation
    assert check.check_leave("b", 4, real)
    assert check.refusals.wrong_name == 1 and check.refusals.forged == 1


def test_revocation_refuses_the_certificate_and_expels_its_holder() -> None:
    check = checker("a")
    claim = alive("b", 2)
    assert check.check_alive("b", 2, claim.addr, {}, claim.proof)
    revocation = sign_revocation(CA, SERIALS["b"], "b", int(NOW))
    assert check.revoke(revocation)
    assert not check.revoke(revocation)  # not news twice
    assert check.take_expelled() == ["b"]
    assert check.blocked(ADDR["b"])
    newer = alive("b", 3)
    assert not check.check_alive("b", 3, newer.addr, {}, newer.proof)
    assert check.refusals.revoked == 1


def test_only_ca_signed_revocations_pass_as_rumors() -> None:
    check = checker("a")
    forged = sign_revocation(OTHER_CA, SERIALS["b"], "b", int(NOW)).encode()
    real = sign_revocation(CA, SERIALS["b"], "b", int(NOW)).encode()
    assert not check.admit_rumor(Rumor(REVOKE_TOPIC, "2", 1, "mallory", forged))
    assert not check.admit_rumor(Rumor(REVOKE_TOPIC, "3", 1, "mallory", real))  # wrong key
    assert not check.admit_rumor(Rumor(REVOKE_TOPIC, "2", 1, "mallory", b"junk"))
    assert check.refusals.bad_revocation == 3
    assert check.admit_rumor(Rumor(REVOKE_TOPIC, "2", 1, "c", real))
    assert check.admit_rumor(Rumor("pools", "p", 1, "c", b"x"))  # other topics untouched
    assert SERIALS["b"] in check.revoked_serials


def test_revocation_wire_form_round_trips_and_rejects_junk() -> None:
    revocation = sign_revocation(CA, 7, "b", int(NOW))
    assert Revocation.decode(revocation.encode()) == revocation
    assert HostCertificate.decode(cert("b").encode()) == cert("b")
    with pytest.raises(ValueError):
        HostCertificate.decode(b"\x93\x01\x02\x03")


# ---------------------------------------------------------------- the core with identities


def core(name: str) -> Membership:
    node = Membership(
        MembershipConfig(randomize_probe_phase=False),
        Member(name, ADDR.get(name, ("10.0.0.3", 7946))),
        random.Random(1),
        checker(name),
    )
    node.handle(Start(), 0.0)
    return node


def test_own_claims_carry_proofs_that_survive_the_wire() -> None:
    b = core("b")
    actions = b.handle(LeaveRequested(), 1.0)
    wire = PushPull("b", False, False, tuple(b.members())).to_wire()
    decoded = decode(wire)
    assert isinstance(decoded, PushPull)
    assert decoded.members[0].proof  # b's leave, signed
    sent = [a.message for a in actions if isinstance(a, Send)]
    assert not sent or decode(sent[0].to_wire()) == sent[0]


def test_nobody_joins_as_b_but_b_and_b_address_does_not_flap() -> None:
    a = core("a")
    a.handle(Received(ADDR["b"], alive("b", 1)), 1.0)
    assert a.member("b") is not None and a.member("b").addr == ADDR["b"]  # type: ignore[union-attr]
    # mallory, holding the cluster key and her own certificate, claims to be b elsewhere
    a.handle(Received(ADDR["mallory"], alive("b", 7, signer="mallory", addr="mallory")), 2.0)
    # and through push-pull state, unsigned
    fake = Member("b", ADDR["mallory"], 8)
    a.handle(StreamReceived(ADDR["mallory"], PushPull("mallory", True, False, (fake,)), 1), 3.0)
    record = a.member("b")
    assert record is not None and record.addr == ADDR["b"] and record.incarnation == 1
    assert a.identity is not None
    assert a.identity.refusals.wrong_name == 1 and a.identity.refusals.unsigned == 1


def test_forged_leave_is_refused_and_a_signed_one_accepted() -> None:
    a = core("a")
    a.handle(Received(ADDR["b"], alive("b", 1)), 1.0)
    a.handle(Received(ADDR["mallory"], Dead("b", 2, "b", left=True)), 2.0)
    a.handle(Received(ADDR["mallory"], Dead("b", 2, "mallory", left=True)), 2.0)
    forged = checker("mallory").prove_leave(2)
    a.handle(Received(ADDR["mallory"], Dead("b", 2, "b", True, forged)), 2.0)
    assert a.state_of("b") is State.ALIVE
    real = checker("b").prove_leave(2)
    a.handle(Received(ADDR["b"], Dead("b", 2, "b", True, real)), 3.0)
    assert a.state_of("b") is State.LEFT


def test_revoke_expels_the_member_gossips_it_and_drops_its_datagrams() -> None:
    a = core("a")
    a.handle(Received(ADDR["b"], alive("b", 1)), 1.0)
    revocation = sign_revocation(CA, SERIALS["b"], "b", int(NOW))
    a.handle(Revoke(revocation), 2.0)
    assert a.state_of("b") is State.LEFT
    held = a.rumor(REVOKE_TOPIC, str(SERIALS["b"]))
    assert held is not None and held.payload == revocation.encode()
    assert a.pending_broadcasts > 0  # the revocation is gossiped
    assert not a.handle(Received(ADDR["b"], Ping(1, "a")), 3.0)  # no ack for b
    a.handle(Received(("10.0.0.3", 7946), alive("b", 9)), 4.0)
    assert a.state_of("b") is State.LEFT


def test_a_revocation_learned_by_gossip_expels_too() -> None:
    a = core("a")
    a.handle(Received(ADDR["b"], alive("b", 1)), 1.0)
    payload = sign_revocation(CA, SERIALS["b"], "b", int(NOW)).encode()
    rumor = Rumor(REVOKE_TOPIC, str(SERIALS["b"]), 5, "c", payload)
    a.handle(Received(("10.0.0.3", 7946), RumorUpdate(rumor, 0)), 2.0)
    assert a.state_of("b") is State.LEFT


@pytest.mark.parametrize(
    "wire",
    [
        [5, "b", 1, "10.0.0.2", 7946, {}, "not bytes"],
        [5, "b", 1, "10.0.0.2", 7946, {}, b"x" * 513],
        [5, "b", 1, "10.0.0.2", 7946, {}, b"", b""],
        [7, "b", 1, "b", True, 42],
    ],
)
def test_proofs_of_the_wrong_shape_are_malformed(wire: list[object]) -> None:
    from sdmesh.membership import MalformedMessage

    with pytest.raises(MalformedMessage):
        decode(wire)


def test_messages_without_a_ca_keep_their_older_wire_form() -> None:
    assert len(Alive("b", 1, ADDR["b"], {}).to_wire()) == 6
    assert len(Dead("b", 1, "b", True).to_wire()) == 5
    assert len(PushPull("a", False, False, (Member("b", ADDR["b"]),)).to_wire()[4][0]) == 6


def test_huge_incarnations_in_reports_are_bounded_to_what_the_member_said() -> None:
    from sdmesh.membership import Suspect
    from sdmesh.membership.wire import MAX_UINT64

    a = core("a")
    a.handle(Received(ADDR["b"], alive("b", 1)), 1.0)
    a.handle(Received(ADDR["mallory"], Suspect("b", MAX_UINT64, "mallory")), 2.0)
    record = a.member("b")
    assert record is not None and record.state is State.SUSPECT and record.incarnation == 1
    a.handle(Received(ADDR["mallory"], Dead("b", MAX_UINT64, "mallory")), 3.0)
    record = a.member("b")
    assert record is not None and record.state is State.DEAD and record.incarnation == 1
    # b refutes with the next incarnation, signed, and is back
    a.handle(Received(ADDR["b"], alive("b", 2)), 4.0)
    assert a.state_of("b") is State.ALIVE
    # about ourselves: refuted with our own next incarnation, which still fits the wire
    before = a.incarnation
    a.handle(Received(ADDR["mallory"], Suspect("a", MAX_UINT64, "mallory")), 5.0)
    assert a.incarnation == before + 1
