"""The agent's identity glue, reload registry and keyring instructions, without a network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdmesh.agent.config import AgentConfig
from sdmesh.agent.identity import Reloader, open_identity, refuse_loose_key_file
from sdmesh.agent.keyring_admin import (
    MAX_AGE,
    InstructionError,
    KeyringAdmin,
    KeyringInstruction,
    parse_request,
)
from sdmesh.cli.ca import ca
from sdmesh.membership.identity import IdentityChecker
from sdmesh.transport import KeyringError, TransportSecurity
from sdmesh.transport.keyring import Keyring, generate_key, key_id, write_key_file
from sdmesh.trust.identity import (
    HostIdentity,
    IdentityError,
    load_revocations,
    sign_certificate,
    sign_revocation,
)
from sdmesh.trust.keys import OperatorKey

NOW = time.time()
CA = OperatorKey.generate("cluster-ca")


def checker(name: str, serial: int) -> IdentityChecker:
    key = OperatorKey.generate(name)
    cert = sign_certificate(CA, name, key.public, serial, int(NOW) - 60, int(NOW) + 3600)
    return IdentityChecker(CA.public, key, cert, wall=lambda: NOW)


def test_reloader_runs_every_part_and_a_failure_stops_nothing() -> None:
    reloader = Reloader()
    calls: list[str] = []
    reloader.register("one", lambda: calls.append("one") or None)

    def broken() -> list[str]:
        raise KeyringError("bad.key: error: not base64")

    reloader.register("two", broken)
    reloader.register("three", lambda: ["a warning"])
    report = reloader.reload()
    assert calls == ["one"]
    assert report["one"] == [] and report["three"] == ["a warning"]
    assert report["two"][0].startswith("not reloaded, kept the previous state")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_cluster_key_files_are_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "cluster.key"
    key.write_text("x\n")
    key.chmod(mode)
    with pytest.raises(KeyringError, match=f"{mode:04o}"):
        refuse_loose_key_file(key)
    key.chmod(0o600)
    refuse_loose_key_file(key)
    link = tmp_path / "link.key"
    link.symlink_to(key)
    with pytest.raises(KeyringError, match="symbolic link"):
        refuse_loose_key_file(link)


def test_ca_commands_enrol_a_host_and_revoke_it(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir, host_dir = tmp_path / "ca", tmp_path / "b" / "identity"
    assert runner.invoke(ca, ["init", str(ca_dir)]).exit_code == 0
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(ca, ["init", str(ca_dir)])
    assert again.exit_code == 2 and "already exists" in again.output
    made = runner.invoke(ca, ["request", "--name", "b", str(host_dir)])
    assert made.exit_code == 0, made.output
    cert = host_dir / "host.cert"
    signed = runner.invoke(
        ca, ["sign", "--ca", str(ca_dir), "-o", str(cert), str(host_dir / "b.pub")]
    )
    assert signed.exit_code == 0, signed.output
    assert "serial 1" in signed.output
    config = AgentConfig(name="b", state_dir=tmp_path / "b", identity_ca=str(ca_dir / "ca.pub"))
    identity = open_identity(config)
    assert identity is not None and identity.name == "b"
    # The same files under another agent name are refused: the name is the certificate's.
    with pytest.raises(IdentityError, match="certifies host 'b'"):
        open_identity(AgentConfig(name="mallory", state_dir=tmp_path / "b", **_ca(ca_dir)))

    revoked = runner.invoke(ca, ["revoke", "--ca", str(ca_dir), "b", "--json"])
    assert revoked.exit_code == 0, revoked.output
    crl = load_revocations(ca_dir / "revoked.crl")
    assert [r.serial for r in crl] == [1]
    loaded = HostIdentity.load(
        ca_dir / "ca.pub", host_dir / "host.key", cert, ca_dir / "revoked.crl", time.time()
    )
    assert loaded.revocations == tuple(crl)
    unknown = runner.invoke(ca, ["revoke", "--ca", str(ca_dir), "nobody"])
    assert unknown.exit_code == 2 and "no certificate issued" in unknown.output


def _ca(ca_dir: Path) -> dict[str, str]:
    return {"identity_ca": str(ca_dir / "ca.pub")}


def test_a_certificate_for_another_key_is_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir, host_dir = tmp_path / "ca", tmp_path / "identity"
    runner.invoke(ca, ["init", str(ca_dir)])
    runner.invoke(ca, ["request", "--name", "b", str(host_dir)])
    other = OperatorKey.generate("b")
    from sdmesh.trust.keys import write_key_pair

    _, other_pub = write_key_pair(other, tmp_path)
    runner.invoke(
        ca, ["sign", "--ca", str(ca_dir), "-o", str(host_dir / "host.cert"), str(other_pub)]
    )
    with pytest.raises(IdentityError, match="certifies another key"):
        HostIdentity.load(
            ca_dir / "ca.pub", host_dir / "host.key", host_dir / "host.cert", None, time.time()
        )


def security(tmp_path: Path, name: str) -> TransportSecurity:
    ring = Keyring([generate_key()])
    path = tmp_path / f"{name}.key"
    write_key_file(path, ring.to_text(), overwrite=False)
    return TransportSecurity(ring, key_file=path)


def test_keyring_steps_apply_and_are_saved(tmp_path: Path) -> None:
    sec = security(tmp_path, "a")
    admin = KeyringAdmin("a", sec, None)
    old, new = sec.keyring.primary if sec.keyring else b"", generate_key()
    assert admin.apply(admin.make("install", new)).endswith("done")
    assert admin.apply(admin.make("use", key_id(new))).endswith("done")
    assert admin.apply(admin.make("remove", key_id(old))).endswith("done")
    assert "not installed" in admin.apply(admin.make("remove", key_id(old)))  # idempotent
    assert Keyring.load(tmp_path / "a.key").keys == (new,)
    assert os.stat(tmp_path / "a.key").st_mode & 0o777 == 0o600
    with pytest.raises(InstructionError, match="primary"):
        admin.apply(admin.make("remove", key_id(new)))


def test_keyring_instructions_must_be_fresh_signed_and_new(tmp_path: Path) -> None:
    sender = KeyringAdmin("b", security(tmp_path, "b"), checker("b", 2))
    receiver = KeyringAdmin("a", security(tmp_path, "a"), checker("a", 1))
    key = generate_key()
    good = sender.make("install", key, wall=NOW)
    wire = KeyringInstruction.from_wire(good.to_wire())
    assert receiver.accept(wire, wall=NOW + 1).endswith("done")
    with pytest.raises(InstructionError, match="replay"):
        receiver.accept(wire, wall=NOW + 2)
    with pytest.raises(InstructionError, match="too old"):
        receiver.accept(sender.make("install", key, wall=NOW - MAX_AGE - 1), wall=NOW)
    unsigned = KeyringInstruction("install", generate_key(), "b", NOW)
    with pytest.raises(InstructionError, match="not signed"):
        receiver.accept(unsigned, wall=NOW)
    # Signed by b but claiming to come from c: refused.
    forged = sender.make("install", generate_key(), wall=NOW)
    moved = KeyringInstruction(forged.op, forged.key, "c", forged.issued_at, forged.proof)
    with pytest.raises(InstructionError, match="not signed"):
        receiver.accept(moved, wall=NOW)
    # A revoked member's instructions are refused.
    assert receiver.identity is not None
    receiver.identity.revoke(sign_revocation(CA, 2, "b", int(NOW)))
    with pytest.raises(InstructionError, match="not signed"):
        receiver.accept(sender.make("install", generate_key(), wall=NOW), wall=NOW)
    assert receiver.refused == 5


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"op": "rotate"},
        {"op": "install", "key": "not base64!"},
        {"op": "install", "key": "AAAA"},
        {"op": "use", "key_id": "xyz"},
        {"op": "remove"},
    ],
)
def test_bad_keyring_requests_are_refused_with_a_reason(body: object) -> None:
    with pytest.raises(InstructionError):
        parse_request(body)


def test_revocations_learned_by_gossip_are_kept_for_the_next_start(tmp_path: Path) -> None:
    from sdmesh.agent.identity import keep_learned_revocations
    from sdmesh.membership.identity import REVOKE_TOPIC
    from sdmesh.membership.messages import Rumor
    from sdmesh.trust.keys import write_key_pair

    runner = CliRunner()
    ca_dir, home = tmp_path / "ca", tmp_path / "a"
    runner.invoke(ca, ["init", str(ca_dir)])
    runner.invoke(ca, ["request", "--name", "a", str(home / "identity")])
    ident = home / "identity"
    runner.invoke(
        ca, ["sign", "--ca", str(ca_dir), "-o", str(ident / "host.cert"), str(ident / "a.pub")]
    )
    _, b_pub = write_key_pair(OperatorKey.generate("b"), tmp_path)
    runner.invoke(ca, ["sign", "--ca", str(ca_dir), "-o", str(tmp_path / "b.cert"), str(b_pub)])
    config = AgentConfig(name="a", state_dir=home, **_ca(ca_dir))
    keep = keep_learned_revocations(config)
    from sdmesh.trust.keys import load_private_key

    revocation = sign_revocation(load_private_key(ca_dir / "ca.key"), 2, "b", int(NOW))
    rumor = Rumor(REVOKE_TOPIC, "2", 1, "c", revocation.encode())
    keep(rumor)
    keep(rumor)  # once only
    keep(Rumor("pools", "p", 1, "c", b"x"))  # other topics are not revocations
    assert load_revocations(home / "identity" / "learned.crl") == [revocation]
    restarted = open_identity(config)
    assert restarted is not None and 2 in restarted.revoked_serials


def test_a_renewed_certificate_is_announced_at_once_on_reload(tmp_path: Path) -> None:
    from sdmesh.agent.identity import identity_reload
    from sdmesh.membership import MetaUpdated, Revoke
    from sdmesh.membership.events import Event

    runner = CliRunner()
    ca_dir, ident = tmp_path / "ca", tmp_path / "a" / "identity"
    runner.invoke(ca, ["init", str(ca_dir)])
    runner.invoke(ca, ["request", "--name", "a", str(ident)])
    sign = ["sign", "--ca", str(ca_dir), "-o", str(ident / "host.cert"), str(ident / "a.pub")]
    runner.invoke(ca, sign)
    config = AgentConfig(name="a", state_dir=tmp_path / "a", **_ca(ca_dir))
    checker = open_identity(config)
    assert checker is not None
    fed: list[Event] = []
    reload = identity_reload(config, checker, fed.append, lambda: {"api": "x"})
    assert reload() == [] and fed == []  # nothing changed: nothing announced
    os.unlink(ident / "host.cert")
    runner.invoke(ca, sign)  # renewed: serial 2
    runner.invoke(ca, ["revoke", "--ca", str(ca_dir), "1"])
    config = AgentConfig(
        name="a", state_dir=tmp_path / "a", identity_crl=str(ca_dir / "revoked.crl"), **_ca(ca_dir)
    )
    reload = identity_reload(config, checker, fed.append, lambda: {"api": "x"})
    assert reload() == []
    assert checker.certificate.serial == 2
    assert [type(e) for e in fed] == [MetaUpdated, Revoke]


def test_records_are_sealed_again_when_a_reload_renews_the_certificate() -> None:
    """A renewal picked up by SIGHUP: the records shepherded here are stored again under the
    new certificate at once, not at the next announce period (4 h)."""
    from sdmesh.agent.identity import reseal_on_renewal

    identity = checker("a", 1)
    resealed: list[int] = []
    reload = reseal_on_renewal(identity, lambda: resealed.append(identity.certificate.serial))
    assert reload() == [] and resealed == []  # nothing changed
    renewed = checker("a", 2)
    identity.replace(renewed.ca, OperatorKey.generate("a"), renewed.certificate)
    assert reload() == [] and resealed == [2]
    assert reload() == [] and resealed == [2]  # once per renewal
