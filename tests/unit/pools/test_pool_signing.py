"""Operator signatures through the pool layer: the CLI's request is signed over the digest
every agent computes again, the envelope is kept by the record, and every deploy and start
order carries it to the hosts, which refuse anything tampered with."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.language import resolve_text
from sdmesh.pools import shepherd as sc
from sdmesh.pools.layout import layout
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import Order, PoolRecord, RecordFormatError
from sdmesh.pools.signing import (
    agent_signature,
    check_submission,
    envelope_of,
    leaf_classes,
    sign_request,
)
from sdmesh.pools.submission import SubmissionError, build_spec_and_tree, request_body
from sdmesh.trust.authorize import Refusal, authorize_order
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import DescriptorSignature
from sdmesh.trust.store import TrustStore

from ..trust.helpers import SHELL_POOL, VM, VM_POOL, store_of

NOW = 1_700_000_000.0
OLIVER = OperatorKey.generate("oliver")  # trusted as operate
ALICE = OperatorKey.generate("alice")  # trusted as admin


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    return store_of(tmp_path, (OLIVER, Role.OPERATE), (ALICE, Role.ADMIN))


def submitted(text: str, key: OperatorKey | None, name: str = "web") -> dict[str, object]:
    """What ``sdmesh submit --key`` posts."""
    resolved = resolve_text(text)
    body = request_body(resolved, name)
    if key is not None:
        sign_request(body, resolved, key, NOW)
    return body


def test_the_cli_signs_what_the_agent_computes(trust: TrustStore) -> None:
    body = submitted(VM_POOL, OLIVER)
    spec, tree = build_spec_and_tree(body)  # the agent's side
    envelope = envelope_of(body)
    assert envelope is not None and envelope.digest == spec.digest and envelope.pool == "web"
    assert envelope.role is Role.OPERATE  # the least the components need
    assert check_submission(envelope, spec, tree, trust, NOW) is None


def test_an_admin_signs_a_vm_pool_as_operate_and_a_shell_pool_as_admin() -> None:
    vm_envelope = envelope_of(submitted(VM_POOL, ALICE))
    shell_envelope = envelope_of(submitted(SHELL_POOL, ALICE))
    assert vm_envelope is not None and vm_envelope.role is Role.OPERATE
    assert shell_envelope is not None and shell_envelope.role is Role.ADMIN


def test_operate_cannot_submit_shell(trust: TrustStore) -> None:
    body = submitted(SHELL_POOL, OLIVER)
    spec, tree = build_spec_and_tree(body)
    refusal = check_submission(envelope_of(body), spec, tree, trust, NOW)
    assert refusal is not None and refusal.reason == "role-not-granted"


def test_a_descriptor_edited_after_signing_is_refused(trust: TrustStore) -> None:
    body = submitted(VM_POOL, OLIVER)
    body["descriptor"] = str(body["descriptor"]).replace("base.qcow2", "other.qcow2")
    spec, tree = build_spec_and_tree(body)
    refusal = check_submission(envelope_of(body), spec, tree, trust, NOW)
    assert refusal is not None and refusal.reason == "wrong-digest"


def test_a_signature_moved_to_another_pool_name_is_refused(trust: TrustStore) -> None:
    body = submitted(VM_POOL, OLIVER)
    body["name"] = "db"
    spec, tree = build_spec_and_tree(body)
    refusal = check_submission(envelope_of(body), spec, tree, trust, NOW)
    assert refusal is not None and refusal.reason == "wrong-pool"


def test_unsigned_and_malformed_requests(trust: TrustStore) -> None:
    body = submitted(VM_POOL, None)
    assert "signature" not in body and envelope_of(body) is None
    spec, tree = build_spec_and_tree(body)
    refusal = check_submission(None, spec, tree, trust, NOW)
    assert refusal is not None and refusal.reason == "unsigned"
    for bad in ("not base64!", 12, "AAAA"):
        with pytest.raises(SubmissionError):
            envelope_of({"signature": bad})


def test_the_agent_signs_only_up_to_the_callers_role(trust: TrustStore) -> None:
    spec, tree = build_spec_and_tree(submitted(VM_POOL, None))
    made = agent_signature(spec, tree, ALICE, Role.OPERATE, NOW)
    assert isinstance(made, DescriptorSignature) and made.role is Role.OPERATE
    assert check_submission(made, spec, tree, trust, NOW) is None
    shell_spec, shell_tree = build_spec_and_tree(submitted(SHELL_POOL, None))
    refused = agent_signature(shell_spec, shell_tree, ALICE, Role.OPERATE, NOW)
    assert isinstance(refused, Refusal) and refused.reason == "role-too-low"
    assert isinstance(
        agent_signature(shell_spec, shell_tree, ALICE, Role.ADMIN, NOW), DescriptorSignature
    )


def test_leaf_classes_are_the_leaves_only() -> None:
    tree = resolve_text(SHELL_POOL).root
    assert sorted(leaf_classes(tree)) == [
        "org.smartfrog.services.shellscript.SFScriptExecutionImpl",
        "org.smartfrog.services.shellscript.SFScriptImpl",
    ]


def test_records_keep_the_envelope_and_older_records_still_decode() -> None:
    envelope = sign_descriptor_bytes()
    record = PoolRecord("web", "ab" * 32, 3, "h1", signature=envelope)
    assert PoolRecord.decode(record.encode()).signature == envelope
    unsigned = PoolRecord("web", "ab" * 32, 3, "h1")
    assert PoolRecord.decode(unsigned.encode()).signature == b""


def test_orders_carry_the_envelope_and_older_orders_still_decode() -> None:
    envelope = sign_descriptor_bytes()
    order = Order(
        "web", 1, "h1", "ab" * 32, "sfConfig:vm", "deploy", "sfConfig:vm", 1, 128, envelope
    )
    assert Order.from_wire(order.to_wire()) == order
    plain = Order("web", 1, "h1", "ab" * 32, "sfConfig:vm", "terminate", "sfConfig:vm")
    assert len(plain.to_wire()) == 9 and Order.from_wire(plain.to_wire()) == plain
    for bad in ([*plain.to_wire(), "text"], [*plain.to_wire(), b"x" * 5000]):
        with pytest.raises(RecordFormatError):
            Order.from_wire(bad)


def sign_descriptor_bytes() -> bytes:
    body = submitted(VM_POOL, OLIVER)
    envelope = envelope_of(body)
    assert envelope is not None
    return envelope.encode()


def test_every_deploy_and_start_order_carries_the_records_envelope(trust: TrustStore) -> None:
    body = submitted(VM_POOL, OLIVER)
    spec, tree = build_spec_and_tree(body)
    envelope = envelope_of(body)
    assert envelope is not None
    record = PoolRecord("web", spec.digest, 1, "h1", signature=envelope.encode())
    core = sc.Shepherd(record, tree, layout(tree), spec.kinds, (HostOffer("h1", 8, 4096, 4096),))
    orders = [a.order for a in core.handle(sc.Begin(), 0.0) if isinstance(a, sc.SendOrder)]
    assert orders and all(o.signature == envelope.encode() for o in orders)
    assert core.record().signature == envelope.encode()
    # On the host: the order's envelope against the spec it runs.
    for order in orders:
        wire = Order.from_wire(order.to_wire())
        assert authorize_order(wire.signature, spec.digest, wire.pool, VM, trust, NOW) is None
    # A shepherd holding an unsigned record (or one edited in the DHT) gets refused.
    forged = PoolRecord("web", spec.digest, 1, "h1")
    forged_core = sc.Shepherd(
        forged, tree, layout(tree), spec.kinds, (HostOffer("h1", 8, 4096, 4096),)
    )
    for action in forged_core.handle(sc.Begin(), 0.0):
        if isinstance(action, sc.SendOrder):
            refusal = authorize_order(action.order.signature, spec.digest, "web", VM, trust, NOW)
            assert refusal is not None and refusal.reason == "unsigned"


def test_what_the_api_keeps_or_refuses(tmp_path: Path) -> None:
    from sdmesh.pools.signing import submission_signature
    from sdmesh.trust.host import HostTrust
    from sdmesh.trust.keys import write_key_pair

    from ..trust.helpers import trusted_dir

    ui = OperatorKey.generate("dashboard")
    keys = tmp_path / "keys"
    keys.mkdir()
    ui_key, _ = write_key_pair(ui, keys)
    directory = trusted_dir(tmp_path, (OLIVER, Role.OPERATE), (ui, Role.OPERATE))
    without_key = HostTrust.open(directory)
    with_key = HostTrust.open(directory, str(ui_key))

    signed_body = submitted(VM_POOL, OLIVER)
    spec, tree = build_spec_and_tree(signed_body)
    kept = submission_signature(signed_body, spec, tree, without_key, Role.OPERATE, NOW)
    assert isinstance(kept, bytes) and DescriptorSignature.decode(kept).signer == "oliver"

    plain = submitted(VM_POOL, None)
    spec, tree = build_spec_and_tree(plain)
    refused = submission_signature(plain, spec, tree, without_key, Role.OPERATE, NOW)
    assert isinstance(refused, Refusal) and refused.reason == "unsigned"
    by_agent = submission_signature(plain, spec, tree, with_key, Role.OPERATE, NOW)
    assert (
        isinstance(by_agent, bytes) and DescriptorSignature.decode(by_agent).signer == "dashboard"
    )

    shell = submitted(SHELL_POOL, None)
    spec, tree = build_spec_and_tree(shell)
    as_operate = submission_signature(shell, spec, tree, with_key, Role.OPERATE, NOW)
    assert isinstance(as_operate, Refusal) and as_operate.reason == "role-too-low"
    # An admin caller: the agent signs as admin, but this host grants its key operate only.
    as_admin = submission_signature(shell, spec, tree, with_key, Role.ADMIN, NOW)
    assert isinstance(as_admin, Refusal) and as_admin.reason == "role-not-granted"
    with pytest.raises(SubmissionError):
        submission_signature({**plain, "signature": "%%"}, spec, tree, with_key, Role.ADMIN, NOW)
    assert dict(with_key.refusals.samples())["role-too-low"] == 1


def test_an_envelope_lends_the_caller_nothing(tmp_path: Path) -> None:
    """An admin's signature seen in the DHT, replayed by a read or operate caller, is refused:
    the caller needs the envelope's role (and the components') itself."""
    from sdmesh.pools.signing import submission_signature
    from sdmesh.trust.host import HostTrust

    from ..trust.helpers import trusted_dir

    directory = trusted_dir(tmp_path, (ALICE, Role.ADMIN), (OLIVER, Role.OPERATE))
    host = HostTrust.open(directory)
    shell = submitted(SHELL_POOL, ALICE, name="maint")
    spec, tree = build_spec_and_tree(shell)
    for caller in (Role.READ, Role.OPERATE):
        later = NOW + 30 * 86400
        refused = submission_signature(shell, spec, tree, host, caller, later)
        assert isinstance(refused, Refusal) and refused.reason == "role-too-low"
        assert "admin" in refused.message and caller.label in refused.message
    assert isinstance(submission_signature(shell, spec, tree, host, Role.ADMIN, NOW), bytes)
    # A VM pool an admin signed as admin: an operate caller is still below the envelope.
    vm_as_admin = request_body(resolve_text(VM_POOL), "web")
    sign_request(vm_as_admin, resolve_text(VM_POOL), ALICE, NOW, role=Role.ADMIN)
    spec, tree = build_spec_and_tree(vm_as_admin)
    refused = submission_signature(vm_as_admin, spec, tree, host, Role.OPERATE, NOW)
    assert isinstance(refused, Refusal) and refused.reason == "role-too-low"
    # A read caller cannot submit even an operate-signed VM pool.
    vm = submitted(VM_POOL, OLIVER)
    spec, tree = build_spec_and_tree(vm)
    refused = submission_signature(vm, spec, tree, host, Role.READ, NOW)
    assert isinstance(refused, Refusal) and refused.reason == "role-too-low"
    assert isinstance(submission_signature(vm, spec, tree, host, Role.OPERATE, NOW), bytes)
    assert dict(host.refusals.samples())["role-too-low"] == 4
