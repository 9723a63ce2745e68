"""HostTrust: what the agent holds; reloads swap the store, refusals are counted, and the
agent's own signing key never signs beyond the caller's role."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmesh.agent.config import AgentConfig, load_config
from sdmesh.trust.authorize import Refusal
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import KeyFileError, OperatorKey, write_key_pair
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import DescriptorSignature, sign_descriptor
from sdmesh.trust.store import revoke_operator

from .helpers import DIGEST, SCRIPT, VM, trusted_dir

NOW = 1_700_000_000.0


def test_reload_sees_a_revocation_and_refusals_are_counted(tmp_path: Path) -> None:
    oliver = OperatorKey.generate("oliver")
    directory = trusted_dir(tmp_path, (oliver, Role.OPERATE))
    trust = HostTrust.open(directory)
    envelope = sign_descriptor(oliver, "web", DIGEST, Role.OPERATE, NOW).encode()
    assert trust.check_leaf(envelope, DIGEST, "web", VM, NOW) is None
    refused = trust.check_leaf(envelope, DIGEST, "web", SCRIPT, NOW)
    assert refused is not None and refused.reason == "role-too-low"
    revoke_operator(directory, "oliver")
    assert trust.check_leaf(envelope, DIGEST, "web", VM, NOW) is None  # until reloaded
    assert trust.reload() == []
    refused = trust.check_leaf(envelope, DIGEST, "web", VM, NOW)
    assert refused is not None and refused.reason == "revoked-key"
    counts = dict(trust.refusals.samples())
    assert counts["role-too-low"] == 1 and counts["revoked-key"] == 1


def test_without_a_signing_key_the_agent_signs_nothing(tmp_path: Path) -> None:
    trust = HostTrust.open(tmp_path / "absent")
    assert trust.sign_for_caller(DIGEST, "web", [VM], Role.ADMIN, NOW) is None
    assert trust.reload()[0].endswith("no operator is trusted")


def test_the_agents_key_signs_up_to_the_callers_role(tmp_path: Path) -> None:
    agent_key = OperatorKey.generate("dashboard")
    keys = tmp_path / "keys"
    keys.mkdir()
    private_path, _ = write_key_pair(agent_key, keys)
    directory = trusted_dir(tmp_path, (agent_key, Role.ADMIN))
    trust = HostTrust.open(directory, str(private_path))
    made = trust.sign_for_caller(DIGEST, "web", [VM], Role.OPERATE, NOW)
    assert isinstance(made, DescriptorSignature) and made.role is Role.OPERATE
    assert trust.check_submission(made, DIGEST, "web", [VM], NOW) is None
    refused = trust.sign_for_caller(DIGEST, "web", [VM, SCRIPT], Role.OPERATE, NOW)
    assert isinstance(refused, Refusal) and refused.reason == "role-too-low"
    as_admin = trust.sign_for_caller(DIGEST, "web", [VM, SCRIPT], Role.ADMIN, NOW)
    assert isinstance(as_admin, DescriptorSignature) and as_admin.role is Role.ADMIN
    os.chmod(private_path, 0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        HostTrust.open(directory, str(private_path))


def test_the_agent_config_names_the_trust_store_and_the_signing_key(tmp_path: Path) -> None:
    assert AgentConfig().operators_dir == Path("/etc/sdmesh/operators.d")
    assert AgentConfig().api_signing_key is None  # off by default
    file = tmp_path / "agent.toml"
    file.write_text('operators-dir = "/srv/ops.d"\napi-signing-key = "/etc/sdmesh/ui.key"\n')
    config = load_config(file, {}, environ={})
    assert config.operators_dir == Path("/srv/ops.d")
    assert config.api_signing_key == "/etc/sdmesh/ui.key"
    from_env = load_config(None, {}, environ={"SDMESH_OPERATORS_DIR": "/x"})
    assert from_env.operators_dir == Path("/x")


def test_an_envelope_is_verified_once_per_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdmesh.trust.keys import PublicKey

    calls: list[bytes] = []
    real_verify = PublicKey.verify

    def counting(self: PublicKey, signature: bytes, message: bytes) -> bool:
        calls.append(signature)
        return real_verify(self, signature, message)

    monkeypatch.setattr(PublicKey, "verify", counting)
    oliver = OperatorKey.generate("oliver")
    trust = HostTrust.open(trusted_dir(tmp_path, (oliver, Role.OPERATE)))
    good = sign_descriptor(oliver, "web", DIGEST, Role.OPERATE, NOW)
    for _ in range(5):
        assert trust.check_leaf(good.encode(), DIGEST, "web", VM, NOW) is None
    assert len(calls) == 1
    # The cached envelope still gets every other check.
    wrong = trust.check_leaf(good.encode(), "cd" * 32, "web", VM, NOW)
    assert wrong is not None and wrong.reason == "wrong-digest"
    # A forgery is never remembered as verified.
    forged = DescriptorSignature(**{**good.__dict__, "signature": bytes(64)})
    for _ in range(2):
        refused = trust.check_leaf(forged.encode(), DIGEST, "web", VM, NOW)
        assert refused is not None and refused.reason == "bad-signature"
    assert len(calls) == 3
    trust.reload()  # a new store: verified again
    assert trust.check_leaf(good.encode(), DIGEST, "web", VM, NOW) is None
    assert len(calls) == 4
