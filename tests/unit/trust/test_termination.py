"""Operator signatures on terminations (issue 12, item 2): only a trusted key with at least
``operate`` ends a pool, for that pool and up to the generation it signed."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

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


# ------------------------------------------ deny by default (issue 12, item 2: review L1)
def test_each_refusal_has_its_reason() -> None:
    from sdmesh.trust.termination import check_termination

    signed = sign_termination(ALICE, "web", 7, 0.0)
    cases = [
        (b"", "web", 0, store(), "unsigned"),  # unsigned: refused at every generation
        (b"", "web", 7, store(), "unsigned"),
        (b"\xc1", "web", 7, store(), "bad-signature"),
        (sign_termination(MALLORY, "web", 7, 0.0), "web", 7, store(), "unknown-key"),
        (signed, "web", 7, store(revoked=frozenset({ALICE.public.key_id})), "revoked-key"),
        (signed, "web", 7, store(Role.READ), "role-not-granted"),
        (signed, "db", 7, store(), "wrong-pool"),
        (signed, "web", 8, store(), "generation-not-covered"),
    ]
    for data, pool, generation, trusted, reason in cases:
        refusal = check_termination(data, pool, generation, trusted)
        assert refusal is not None and refusal.reason == reason, (reason, refusal)
    impostor = OperatorKey("bob", ALICE.private)  # alice's key, signing as someone else
    forged = sign_termination(impostor, "web", 7, 0.0)
    refusal = check_termination(forged, "web", 7, store())
    assert refusal is not None and refusal.reason == "wrong-signer"
    assert check_termination(signed, "web", 7, store()) is None
    assert check_termination(signed, "web", 0, store()) is None
    assert check_termination(signed, "web", 7, store(Role.ADMIN)) is None


def _host(tmp_path: Path, signer: OperatorKey | None = None, role: Role = Role.OPERATE) -> Any:
    from sdmesh.trust.host import HostTrust

    trust = HostTrust(tmp_path, store(role), signer)
    return trust


def test_the_api_signs_for_its_caller_only_with_its_own_key(tmp_path: Path) -> None:
    """An unsigned API termination is signed by the agent's api-signing-key up to the newest
    generation plus SLACK (takeovers meanwhile), and refused without one (counted)."""
    from sdmesh.trust.authorize import Refusal
    from sdmesh.trust.termination import SLACK, api_termination, signed_generation

    made = api_termination(None, "web", 5, _host(tmp_path, ALICE), 100.0)
    assert isinstance(made, bytes) and signed_generation(made) == 5 + SLACK
    assert termination_refusal(made, "web", 5 + SLACK, store()) is None
    bare = _host(tmp_path)
    refused = api_termination(None, "web", 5, bare, 100.0)
    assert isinstance(refused, Refusal) and refused.reason == "unsigned"
    assert "sdmesh terminate --key" in refused.message and "api-signing-key" in refused.message
    assert bare.refusals.counts["unsigned"] == 1


def test_the_api_checks_a_given_signature_against_the_newest_generation(tmp_path: Path) -> None:
    from sdmesh.trust.authorize import Refusal
    from sdmesh.trust.termination import api_termination, termination_text

    trust = _host(tmp_path)
    text = termination_text(ALICE, "web", 5, 100.0)  # up to 5 + SLACK
    assert api_termination(text, "web", 5, trust, 100.0) == base64.b64decode(text)
    lower = api_termination(termination_text(ALICE, "web", 0, 100.0), "web", 40, trust, 100.0)
    assert isinstance(lower, Refusal) and lower.reason == "generation-not-covered"
    reader = api_termination(text, "web", 5, _host(tmp_path, role=Role.READ), 100.0)
    assert isinstance(reader, Refusal) and reader.reason == "role-not-granted"
    other = api_termination(termination_text(MALLORY, "web", 5, 1.0), "web", 5, trust, 1.0)
    assert isinstance(other, Refusal) and other.reason == "unknown-key"
    assert trust.refusals.counts["generation-not-covered"] == 1
    for junk in ("not base64!", 7, "QUJD", "x" * 2000):
        with pytest.raises(TerminationFormatError):
            api_termination(junk, "web", 5, trust, 100.0)


def test_the_agents_own_signature_is_checked_too(tmp_path: Path) -> None:
    """Review: an api-signing-key revoked or demoted since it was configured ends nothing
    (refused and counted), as a signature the caller sends would not."""
    from sdmesh.trust.authorize import Refusal
    from sdmesh.trust.host import HostTrust
    from sdmesh.trust.termination import api_termination

    for trusted, reason in [
        (store(revoked=frozenset({ALICE.public.key_id})), "revoked-key"),
        (store(Role.READ), "role-not-granted"),
        (TrustStore({}), "unknown-key"),
    ]:
        trust = HostTrust(tmp_path, trusted, ALICE)
        refused = api_termination(None, "web", 5, trust, 100.0)
        assert isinstance(refused, Refusal) and refused.reason == reason
        assert trust.refusals.counts[reason] == 1


def test_signatures_stop_at_the_largest_generation(tmp_path: Path) -> None:
    from sdmesh.trust.termination import (
        SLACK,
        api_termination,
        signed_generation,
        signed_up_to,
        termination_text,
    )

    top = 2**31 - 1
    assert signed_up_to(5) == 5 + SLACK and signed_up_to(top - 3) == signed_up_to(top) == top
    made = api_termination(None, "web", top - 3, _host(tmp_path, ALICE), 100.0)
    assert isinstance(made, bytes) and signed_generation(made) == top
    text = termination_text(ALICE, "web", top, 100.0)
    assert TerminationSignature.from_text(text).generation == top
