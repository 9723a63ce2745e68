"""Operator signatures on terminations (issue 12, item 2): only a trusted key with at least
``operate`` ends a pool, for that pool and up to the generation it signed."""

from __future__ import annotations

import msgpack
import pytest

from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import TrustedOperator, TrustStore
from sdmesh.trust.termination import (
    TerminationFormatError,
    TerminationSignature,
    sign_termination,
    termination_refusal,
)

ALICE = OperatorKey.generate("alice")
MALLORY = OperatorKey.generate("mallory")


def store(role: Role = Role.OPERATE, revoked: frozenset[str] = frozenset()) -> TrustStore:
    return TrustStore({ALICE.public.key_id: TrustedOperator(ALICE.public, role)}, revoked)


def test_a_trusted_operator_ends_the_pool_up_to_the_generation_signed() -> None:
    signed = sign_termination(ALICE, "web", 7, 1000.0)
    assert termination_refusal(signed, "web", 7, store()) is None
    assert termination_refusal(signed, "web", 3, store()) is None
    assert termination_refusal(signed, "web", 8, store()) is not None  # beyond what it says
    assert termination_refusal(signed, "db", 7, store()) is not None  # another pool
    assert termination_refusal(signed, "web", 7, store(Role.READ)) is not None
    revoked = frozenset({ALICE.public.key_id})
    assert termination_refusal(signed, "web", 7, store(revoked=revoked)) is not None


def test_unsigned_forged_and_malformed_terminations_are_refused() -> None:
    assert termination_refusal(b"", "web", 1, store()) == "unsigned"
    assert termination_refusal(sign_termination(MALLORY, "web", 7, 0.0), "web", 7, store())
    good = TerminationSignature.decode(sign_termination(ALICE, "web", 7, 0.0))
    raised = TerminationSignature(
        good.pool, 2**31 - 1, good.key_id, good.signer, good.signed_at, good.signature
    )
    assert "does not verify" in str(termination_refusal(raised.encode(), "web", 9, store()))
    for junk in (b"\xc1", b"x" * 600, "text", msgpack.packb([1, "web", 2**62, "k", "a", 0, b""])):
        assert termination_refusal(junk, "web", 1, store()) is not None
    with pytest.raises(TerminationFormatError):
        TerminationSignature.decode(msgpack.packb([1, "web", 2**64 - 1, "k", "a", 0, b""]))
