"""authorize_leaf: a leaf runs only under a valid signature from a trusted key whose role
allows it; every other case is refused with its own reason, and counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from sdmesh.trust.authorize import (
    MAX_CLOCK_SKEW,
    REASONS,
    Refusal,
    RefusalCounter,
    authorize_leaf,
    authorize_submission,
    refusal_event,
    refusal_metric,
)
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import sign_descriptor
from sdmesh.trust.store import TrustStore, revoke_operator

from .helpers import DIGEST, SCRIPT, VM, store_of, trusted_dir

NOW = 1_700_000_000.0
ALICE = OperatorKey.generate("alice")  # trusted as admin
OLIVER = OperatorKey.generate("oliver")  # trusted as operate
MALLORY = OperatorKey.generate("mallory")  # unknown


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    return store_of(tmp_path, (ALICE, Role.ADMIN), (OLIVER, Role.OPERATE))


def signed(key: OperatorKey, role: Role = Role.OPERATE, pool: str = "web", at: float = NOW):
    return sign_descriptor(key, pool, DIGEST, role, at)


def reason(refusal: Refusal | None) -> str | None:
    return None if refusal is None else refusal.reason


def test_a_trusted_signature_runs_what_its_role_allows(trust: TrustStore) -> None:
    assert authorize_leaf(signed(OLIVER), DIGEST, "web", VM, trust, NOW) is None
    assert authorize_leaf(signed(ALICE, Role.ADMIN), DIGEST, "web", SCRIPT, trust, NOW) is None
    # An admin may sign as operate, for VMs: then shell is not allowed by that signature.
    assert authorize_leaf(signed(ALICE), DIGEST, "web", VM, trust, NOW) is None


def test_unsigned_runs_nowhere(trust: TrustStore) -> None:
    assert reason(authorize_leaf(None, DIGEST, "web", VM, trust, NOW)) == "unsigned"


def test_an_unknown_key_runs_nowhere(trust: TrustStore) -> None:
    refusal = authorize_leaf(signed(MALLORY, Role.ADMIN), DIGEST, "web", VM, trust, NOW)
    assert reason(refusal) == "unknown-key"
    assert refusal is not None and MALLORY.public.key_id in refusal.message


def test_a_revoked_key_runs_nowhere(tmp_path: Path) -> None:
    directory = trusted_dir(tmp_path, (ALICE, Role.ADMIN))
    envelope = signed(ALICE)
    assert authorize_leaf(envelope, DIGEST, "web", VM, TrustStore.load(directory), NOW) is None
    revoke_operator(directory, "alice")
    after = TrustStore.load(directory)  # the agent's reload
    assert reason(authorize_leaf(envelope, DIGEST, "web", VM, after, NOW)) == "revoked-key"


def test_a_descriptor_changed_after_signing_runs_nowhere(trust: TrustStore) -> None:
    envelope = signed(OLIVER)
    other = "cd" * 32
    assert reason(authorize_leaf(envelope, other, "web", VM, trust, NOW)) == "wrong-digest"
    # Editing the envelope's digest to match breaks the signature instead.
    forged = dataclasses.replace(envelope, digest=other)
    assert reason(authorize_leaf(forged, other, "web", VM, trust, NOW)) == "bad-signature"


def test_any_tampered_field_breaks_the_signature(trust: TrustStore) -> None:
    envelope = signed(OLIVER)
    for change in ({"pool": "db"}, {"role": Role.ADMIN}, {"signed_at": int(NOW) - 1}):
        forged = dataclasses.replace(envelope, **change)  # type: ignore[arg-type]
        pool = forged.pool
        refusal = authorize_leaf(forged, DIGEST, pool, SCRIPT, trust, NOW)
        assert reason(refusal) == "bad-signature", change
    flipped = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
    forged = dataclasses.replace(envelope, signature=flipped)
    assert reason(authorize_leaf(forged, DIGEST, "web", VM, trust, NOW)) == "bad-signature"
    # Another trusted key's id on this signature does not verify either.
    borrowed = dataclasses.replace(envelope, key_id=ALICE.public.key_id)
    assert reason(authorize_leaf(borrowed, DIGEST, "web", VM, trust, NOW)) == "bad-signature"


def test_a_signature_for_another_pool_runs_nowhere(trust: TrustStore) -> None:
    refusal = authorize_leaf(signed(OLIVER, pool="db"), DIGEST, "web", VM, trust, NOW)
    assert reason(refusal) == "wrong-pool"


def test_a_signer_name_other_than_the_trusted_keys_runs_nowhere(tmp_path: Path) -> None:
    """The envelope's name is the signer's own claim: mallory's trusted key cannot sign as
    alice (refusals, events and audit lines would blame alice)."""
    from sdmesh.trust.signatures import DescriptorSignature, signed_bytes

    store = store_of(tmp_path, (MALLORY, Role.OPERATE), (ALICE, Role.ADMIN))
    key_id = MALLORY.public.key_id
    fields = ("web", DIGEST, key_id, "alice", NOW, Role.OPERATE)
    forged = DescriptorSignature(*fields, MALLORY.sign(signed_bytes(*fields)))
    refusal = authorize_leaf(forged, DIGEST, "web", VM, store, NOW)
    assert reason(refusal) == "wrong-signer"
    assert refusal is not None and "trusts as mallory" in refusal.message
    assert "alice" not in refusal.message
    honest = sign_descriptor(MALLORY, "web", DIGEST, Role.OPERATE, NOW)
    assert authorize_leaf(honest, DIGEST, "web", VM, store, NOW) is None


def test_operate_cannot_run_shell(trust: TrustStore) -> None:
    refusal = authorize_leaf(signed(OLIVER), DIGEST, "web", SCRIPT, trust, NOW)
    assert reason(refusal) == "role-too-low"
    assert refusal is not None and "admin" in refusal.message
    # Claiming admin with a key the host grants operate only does not help.
    claimed = authorize_leaf(signed(OLIVER, Role.ADMIN), DIGEST, "web", SCRIPT, trust, NOW)
    assert reason(claimed) == "role-not-granted"


def test_a_read_key_runs_nothing(tmp_path: Path) -> None:
    trust = store_of(tmp_path, (OLIVER, Role.READ))
    as_read = authorize_leaf(signed(OLIVER, Role.READ), DIGEST, "web", VM, trust, NOW)
    assert reason(as_read) == "role-too-low"
    claimed = authorize_leaf(signed(OLIVER), DIGEST, "web", VM, trust, NOW)
    assert reason(claimed) == "role-not-granted"


def test_unknown_classes_need_admin(trust: TrustStore) -> None:
    envelope = signed(OLIVER)
    odd = "com.example.Anything"
    assert reason(authorize_leaf(envelope, DIGEST, "web", odd, trust, NOW)) == "role-too-low"


def test_old_signatures_stay_valid_future_ones_do_not(trust: TrustStore) -> None:
    years_ago = signed(OLIVER, at=NOW - 5 * 365 * 86400)
    assert authorize_leaf(years_ago, DIGEST, "web", VM, trust, NOW) is None
    near = signed(OLIVER, at=NOW + MAX_CLOCK_SKEW - 1)
    assert authorize_leaf(near, DIGEST, "web", VM, trust, NOW) is None
    far = signed(OLIVER, at=NOW + MAX_CLOCK_SKEW + 60)
    assert reason(authorize_leaf(far, DIGEST, "web", VM, trust, NOW)) == "future"


def test_an_empty_trust_store_runs_nothing(tmp_path: Path) -> None:
    empty = TrustStore.load(tmp_path / "absent")
    envelope = signed(ALICE, Role.ADMIN)
    assert reason(authorize_leaf(envelope, DIGEST, "web", VM, empty, NOW)) == "unknown-key"


def test_a_submission_is_checked_for_every_class(trust: TrustStore) -> None:
    classes = [VM, "sdmesh.storage.Qcow2OverlayBackend", VM]
    assert authorize_submission(signed(OLIVER), DIGEST, "web", classes, trust, NOW) is None
    with_shell = [*classes, SCRIPT]
    refusal = authorize_submission(signed(OLIVER), DIGEST, "web", with_shell, trust, NOW)
    assert reason(refusal) == "role-too-low"
    assert reason(authorize_submission(None, DIGEST, "web", [], trust, NOW)) == "unsigned"
    assert authorize_submission(signed(OLIVER), DIGEST, "web", [], trust, NOW) is None


def test_refusals_are_counted_and_told(trust: TrustStore) -> None:
    counter = RefusalCounter()
    for envelope in (None, signed(MALLORY), None):
        refusal = authorize_leaf(envelope, DIGEST, "web", VM, trust, NOW)
        assert refusal is not None
        counter.count(refusal)
    assert dict(counter.samples())["unsigned"] == 2
    assert [r for r, _ in counter.samples()] == list(REASONS)

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield refusal_metric(counter)

    registry = CollectorRegistry()
    registry.register(One())
    text = generate_latest(registry).decode()
    assert 'sdmesh_descriptor_refusals_total{reason="unsigned"} 2.0' in text
    assert 'sdmesh_descriptor_refusals_total{reason="unknown-key"} 1.0' in text
    event = refusal_event(Refusal("unsigned", "m"), "web", "sfConfig:vm", "h1")
    assert event == {
        "type": "refused",
        "pool": "web",
        "path": "sfConfig:vm",
        "host": "h1",
        "reason": "unsigned",
        "message": "m",
    }


def test_orders_carry_the_envelope_as_bytes(trust: TrustStore) -> None:
    from sdmesh.trust.authorize import authorize_order

    envelope = signed(OLIVER)
    assert authorize_order(envelope.encode(), DIGEST, "web", VM, trust, NOW) is None
    assert reason(authorize_order(b"", DIGEST, "web", VM, trust, NOW)) == "unsigned"
    assert reason(authorize_order(b"\x93junk", DIGEST, "web", VM, trust, NOW)) == "bad-signature"
