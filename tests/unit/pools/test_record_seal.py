"""Records and rumors proven by their writer (sdmesh.pools.record_seal): the signed bytes,
the wire fields, and who may write a record, with a table of forgeries (issue 12, item 2)."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import msgpack
import pytest

from sdmesh.membership.identity import IdentityChecker
from sdmesh.pools import record_seal as seal
from sdmesh.pools.authz import SHEPHERD_RANKS
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import MAX_PROOF_BYTES, PoolRecord, RecordFormatError
from sdmesh.trust.host import HostTrust
from sdmesh.trust.identity import SIGNATURE_BYTES, sign_certificate, sign_revocation
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import sign_descriptor
from sdmesh.trust.store import TrustedOperator, TrustStore

NOW = 1_800_000_000.0
CA = OperatorKey.generate("cluster-ca")
NAMES = [f"h{i}" for i in range(8)]
POOL = "web"
DIGEST = "a" * 64
RANKED = by_distance(POOL, NAMES)
OPERATOR = OperatorKey.generate("alice")


def checker(name: str, serial: int) -> IdentityChecker:
    key = OperatorKey.generate(name)
    cert = sign_certificate(CA, name, key.public, serial, int(NOW) - 60, int(NOW) + 86400)
    return IdentityChecker(CA.public, key, cert, wall=lambda: NOW)


HOSTS = {name: checker(name, i + 1) for i, name in enumerate(NAMES)}
READER = checker("reader", 100)


def envelope(pool: str = POOL, digest: str = DIGEST, key: OperatorKey = OPERATOR) -> bytes:
    return sign_descriptor(key, pool, digest, Role.OPERATE, NOW).encode()


def record(shepherd: str, **changes: object) -> PoolRecord:
    base = PoolRecord(
        POOL,
        DIGEST,
        7,
        shepherd,
        "running",
        {"sfConfig:vm": RANKED[-1]},
        away={RANKED[-2]: NOW + 60},
        vouched={RANKED[-2]: {"sfConfig:vm": "running"}},
        signature=envelope(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def sealed(rec: PoolRecord, writer: str, signer: str | None = None) -> PoolRecord:
    return seal.seal_record(rec, writer, HOSTS[signer or writer].prove)


def refusal(rec: PoolRecord, members: list[str] = NAMES, **kw: object) -> str | None:
    return seal.record_refusal(rec, members, READER.check_signed, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ bytes and wire
def test_the_signed_bytes_are_domain_separated_canonical_and_cover_every_field() -> None:
    rec = sealed(record(RANKED[0]), RANKED[0])
    data = seal.record_bytes(rec)
    assert data.startswith(b"sdmesh-record-v1\x00")
    assert seal.record_bytes(dataclasses.replace(rec, proof=b"other")) == data  # not the proof
    reordered = dataclasses.replace(
        rec, placement=dict(reversed(list({"b": "h1", "a": "h2"}.items())))
    )
    same = dataclasses.replace(rec, placement={"a": "h2", "b": "h1"})
    assert seal.record_bytes(reordered) == seal.record_bytes(same)
    for change in (
        {"pool": "web2"},
        {"digest": "b" * 64},
        {"generation": 8},
        {"shepherd": RANKED[1]},
        {"state": "failed"},
        {"placement": {}},
        {"reason": "x"},
        {"away": {}},
        {"vouched": {}},
        {"signature": b""},
        {"writer": RANKED[1]},
    ):
        assert seal.record_bytes(dataclasses.replace(rec, **change)) != data, change  # type: ignore[arg-type]
    assert seal.rumor_bytes("tomb", POOL, {"gen": 1}).startswith(b"sdmesh-rumor-v1\x00")


def test_records_carry_writer_and_proof_and_older_records_decode_without() -> None:
    rec = sealed(record(RANKED[0]), RANKED[0])
    assert PoolRecord.decode(rec.encode()) == rec
    old = PoolRecord(POOL, DIGEST, 1, "h1")
    assert PoolRecord.decode(old.encode()) == old
    assert (old.writer, old.proof) == ("", b"")
    body = msgpack.unpackb(zlib.decompress(rec.encode()))
    for field, bad in (
        ("proof", "text"),
        ("proof", b"x" * (MAX_PROOF_BYTES + 1)),
        ("writer", 5),
        ("writer", "a/b"),
        ("writer", "evil\u202e"),
    ):
        with pytest.raises(RecordFormatError):
            PoolRecord.decode(zlib.compress(msgpack.packb({**body, field: bad})))


# ------------------------------------------------------------------ who may write
def test_the_shepherd_its_successors_a_dead_shepherd_and_the_followed_one_may_write() -> None:
    for rank in range(SHEPHERD_RANKS):
        assert refusal(sealed(record(RANKED[rank]), RANKED[rank])) is None
    dead = RANKED[0]
    alive = [n for n in NAMES if n != dead]
    assert refusal(sealed(record(dead), dead), alive) is None  # its successor takes over
    far = RANKED[-1]
    assert refusal(sealed(record(far), far), followed=far) is None


def test_a_submitter_may_write_the_submission_record_with_the_operator_envelope() -> None:
    submission = PoolRecord(POOL, DIGEST, 3, RANKED[0], signature=envelope())
    assert seal.is_submission(submission)
    assert refusal(sealed(submission, RANKED[-1])) is None
    trusted = HostTrust(Path("/nonexistent"), _store(OPERATOR))
    check = seal.envelope_checker(trusted, lambda: NOW)
    assert refusal(sealed(submission, RANKED[-1]), envelope_check=check) is None
    assert trusted.verified  # verified once, remembered as the leaf guard does


def _store(*keys: OperatorKey) -> TrustStore:
    return TrustStore({k.public.key_id: TrustedOperator(k.public, Role.OPERATE) for k in keys})


def _stranger_record() -> PoolRecord:
    """A host with a valid certificate, unknown here, that would not rank among the closest."""
    name = next(
        f"m{i}"
        for i in range(100)
        if by_distance(POOL, [*NAMES, f"m{i}"]).index(f"m{i}") >= SHEPHERD_RANKS
    )
    return seal.seal_record(record(name), name, checker(name, 300).prove)


def _forgeries() -> list[tuple[str, PoolRecord, dict[str, object]]]:
    near, far, other = RANKED[0], RANKED[-1], RANKED[1]
    genuine = sealed(record(near), near)
    submission = PoolRecord(POOL, DIGEST, 3, near, signature=envelope())
    untrusted = HostTrust(Path("/nonexistent"), _store(OperatorKey.generate("bob")))
    return [
        ("unsigned", record(near), {}),
        ("named, no proof", dataclasses.replace(record(near), writer=near), {}),
        ("signed by another member", sealed(record(near), near, signer=other), {}),
        ("proof of another record", dataclasses.replace(genuine, generation=99), {}),
        (
            "proof moved to another writer",
            dataclasses.replace(genuine, writer=other, shepherd=other),
            {},
        ),
        (
            "truncated proof",
            dataclasses.replace(genuine, proof=genuine.proof[:SIGNATURE_BYTES]),
            {},
        ),
        ("writer far from the pool", sealed(record(far), far), {}),
        ("writer is not the shepherd it names", sealed(record(near), other), {}),
        ("a certified stranger far from the pool", _stranger_record(), {}),
        (
            "submission without envelope",
            sealed(dataclasses.replace(submission, signature=b""), far),
            {},
        ),
        (
            "submission, envelope of another pool",
            sealed(dataclasses.replace(submission, signature=envelope(pool="db")), far),
            {},
        ),
        (
            "submission, envelope of another digest",
            sealed(dataclasses.replace(submission, signature=envelope(digest="b" * 64)), far),
            {},
        ),
        (
            "submission, garbage envelope",
            sealed(dataclasses.replace(submission, signature=b"\x01" * 40), far),
            {},
        ),
        (
            "submission naming a far shepherd",
            sealed(dataclasses.replace(submission, shepherd=far), other),
            {},
        ),
        (
            "submission with a placement",
            sealed(dataclasses.replace(submission, placement={"sfConfig:vm": far}), far),
            {},
        ),
        (
            "submission, untrusted operator",
            sealed(submission, far),
            {"envelope_check": seal.envelope_checker(untrusted, lambda: NOW)},
        ),
    ]


FORGERIES = _forgeries()


@pytest.mark.parametrize("case", FORGERIES, ids=[name for name, _, _ in FORGERIES])
def test_forged_records_are_refused(case: tuple[str, PoolRecord, dict[str, object]]) -> None:
    name, rec, kw = case
    problem = refusal(rec, **kw)  # type: ignore[arg-type]
    assert problem is not None and problem.startswith(f"pool {POOL}: ")
    expected = (
        "without its writer's proof"
        if name in ("unsigned", "named, no proof")
        else "does not verify"
        if "proof" in name or "signed by" in name
        else "without a valid operator signature"
        if "envelope" in name or "operator" in name
        else "not its shepherd"
        if "far shepherd" in name
        else "not entitled to write it"
    )
    assert expected in problem, (name, problem)


def test_a_revoked_writer_is_refused() -> None:
    reader = checker("reader2", 200)
    rec = sealed(record(RANKED[0]), RANKED[0])
    assert seal.record_refusal(rec, NAMES, reader.check_signed) is None
    serial = HOSTS[RANKED[0]].certificate.serial
    assert reader.revoke(sign_revocation(CA, serial, RANKED[0], int(NOW)))
    assert seal.record_refusal(rec, NAMES, reader.check_signed) is not None


# ------------------------------------------------------------------ rumors
def certificate_of(name: str) -> bytes | None:
    host = HOSTS.get(name)
    return host.certificate.encode() if host is not None else None


def rumor_verdict(topic: str, body: dict[str, object]) -> str | None:
    found = seal.rumor_refusal(topic, POOL, body, READER.check_signed, certificate_of)
    return found[0] if found is not None else None


def test_a_sealed_rumor_verifies_and_fits_a_rumor_payload() -> None:
    from sdmesh.membership.messages import MAX_RUMOR_PAYLOAD_BYTES
    from sdmesh.trust.termination import sign_termination

    writer = "h3"
    tomb = seal.seal_rumor("tomb", POOL, {"by": writer, "gen": 4}, writer, HOSTS[writer].prove)
    assert len(tomb["proof"]) == SIGNATURE_BYTES  # type: ignore[arg-type]
    assert rumor_verdict("tomb", tomb) is None
    pool = seal.seal_rumor(
        "pool",
        POOL,
        {"digest": DIGEST, "state": "running", "shepherd": "h1", "generation": 3},
        writer,
        HOSTS[writer].prove,
    )
    assert rumor_verdict("pool", pool) is None
    assert rumor_verdict("tomb", pool) == "refused"  # signed for the other topic
    # The largest tombstone: the longest names, an operator's termination signature.
    longest, pool_name = "h" * 63, "p" * 63  # certified names: at most 63 characters
    host = checker(longest, 400)
    signature = sign_termination(OperatorKey.generate("o" * 63), pool_name, 2**31 - 1, NOW)
    body = {"by": longest, "gen": 2**31 - 1, "sig": signature}
    big = seal.seal_rumor("tomb", pool_name, body, longest, host.prove)
    assert "by" not in big  # the writer says it
    assert len(msgpack.packb(big, use_bin_type=True)) <= MAX_RUMOR_PAYLOAD_BYTES
    # Without identities nothing is sealed, and a member name may take 255 characters.
    unsealed = {"by": "h" * 255, "gen": 2**31 - 1, "sig": signature}
    assert len(msgpack.packb(unsealed, use_bin_type=True)) <= MAX_RUMOR_PAYLOAD_BYTES


def test_forged_rumors_are_refused_and_an_unknown_writer_waits() -> None:
    writer = "h3"
    tomb = seal.seal_rumor("tomb", POOL, {"by": writer, "gen": 4}, writer, HOSTS[writer].prove)
    cases: dict[str, dict[str, object]] = {
        "unsigned": {"by": writer, "gen": 4},
        "no writer": {k: v for k, v in tomb.items() if k != "writer"},
        "raised generation": {**tomb, "gen": 2**31 - 1},
        "another writer": {**tomb, "writer": "h4"},
        "another's name": seal.seal_rumor(
            "tomb", POOL, {"by": "h4", "gen": 4}, writer, HOSTS[writer].prove
        ),
        "signed by another": {
            **tomb,
            "proof": HOSTS["h4"].prove(seal.rumor_bytes("tomb", POOL, tomb))[:64],
        },
        "malformed writer": {**tomb, "writer": "bad\nname"},
        "field names not strings": {**tomb, 5: 1},
    }
    for name, body in cases.items():
        assert rumor_verdict("tomb", body) == "refused", name
    stranger = checker("h99", 99)
    unknown = seal.seal_rumor("tomb", POOL, {"by": "h99", "gen": 4}, "h99", stranger.prove)
    assert rumor_verdict("tomb", unknown) == seal.UNKNOWN_WRITER


def test_a_pool_rumor_says_more_than_deploying_only_from_its_entitled_shepherd() -> None:
    near, far = RANKED[0], RANKED[-1]

    def body(state: str, shepherd: str, writer: str) -> dict[str, object]:
        return {"state": state, "shepherd": shepherd, "writer": writer}

    assert seal.pool_rumor_refusal(POOL, body("deploying", near, far), NAMES) is None
    assert seal.pool_rumor_refusal(POOL, body("running", near, near), NAMES) is None
    assert seal.pool_rumor_refusal(POOL, body("failed", far, far), NAMES, followed=far) is None
    for state in ("running", "terminated", "failed"):
        assert seal.pool_rumor_refusal(POOL, body(state, near, far), NAMES) is not None
        assert seal.pool_rumor_refusal(POOL, body(state, far, far), NAMES) is not None
