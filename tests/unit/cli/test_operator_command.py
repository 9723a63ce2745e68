"""``sdmesh operator`` and ``sdmesh submit --key``: keys made, trusted and revoked from the
CLI, and a signed submission that an agent's check accepts (and refuses once revoked)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli.main import cli
from sdmesh.pools.signing import check_submission, envelope_of
from sdmesh.pools.submission import build_spec_and_tree
from sdmesh.trust.store import TrustStore

from ..trust.helpers import SHELL_POOL, VM_POOL
from .fake_agent import FakeAgent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SDMESH_TOKEN", "SDMESH_TOKEN_FILE", "SDMESH_AGENT", "SDMESH_OPERATOR_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_keygen_trust_list_revoke(tmp_path: Path) -> None:
    made = run("operator", "keygen", "alice")
    assert made.exit_code == 0, made.output
    keys = tmp_path / "config" / "sdmesh"
    assert os.stat(keys / "alice.key").st_mode & 0o777 == 0o600
    assert os.stat(keys).st_mode & 0o777 == 0o700
    assert run("operator", "keygen", "alice").exit_code == 2  # never overwritten silently
    store = tmp_path / "operators.d"
    trusted = run(
        "operator", "trust", str(keys / "alice.pub"), "--role", "admin", "--dir", str(store)
    )
    assert trusted.exit_code == 0 and "as admin" in trusted.output
    listed = run("operator", "list", "--dir", str(store))
    assert "alice" in listed.output and "admin" in listed.output
    as_json = json.loads(run("operator", "list", "--json", "--dir", str(store)).stdout)
    assert [(o["name"], o["role"]) for o in as_json["operators"]] == [("alice", "admin")]
    assert as_json["revoked"] == [] and as_json["problems"] == []
    revoked = run("operator", "revoke", "alice", "--dir", str(store))
    assert revoked.exit_code == 0 and "revoked key" in revoked.output
    assert TrustStore.load(store).operators == {}
    assert run("operator", "revoke", "alice", "--dir", str(store)).exit_code == 1
    again = run(
        "operator", "trust", str(keys / "alice.pub"), "--role", "admin", "--dir", str(store)
    )
    assert again.exit_code == 2 and "revoked" in again.output


def test_bad_inputs_are_exit_2_with_a_located_message(tmp_path: Path) -> None:
    assert run("operator", "keygen", "Bad Name").exit_code == 2
    nothing = run("operator", "trust", str(tmp_path / "absent.pub"), "--role", "read")
    assert nothing.exit_code == 2 and "absent.pub" in nothing.output
    assert run("operator", "trust", "x.pub", "--role", "root").exit_code == 2


def accepting(store: Path, seen: list[Any]) -> FakeAgent:
    """An agent whose POST /v1/pools makes the submission check a real agent makes."""

    def submit(body: Any) -> tuple[int, object]:
        spec, tree = build_spec_and_tree(body)
        refusal = check_submission(
            envelope_of(body), spec, tree, TrustStore.load(store), time.time()
        )
        seen.append(refusal)
        if refusal is not None:
            return 403, {"error": refusal.message}
        return 200, {"pool": spec.pool, "shepherd": "h1", "digest": spec.digest}

    return FakeAgent({("POST", "/v1/pools"): submit})


def test_submit_signs_with_the_operators_key(tmp_path: Path) -> None:
    run("operator", "keygen", "oliver")
    keys = tmp_path / "config" / "sdmesh"
    store = tmp_path / "operators.d"
    run("operator", "trust", str(keys / "oliver.pub"), "--role", "operate", "--dir", str(store))
    vm_file, shell_file = tmp_path / "vm.sf", tmp_path / "shell.sf"
    vm_file.write_text(VM_POOL)
    shell_file.write_text(SHELL_POOL)
    seen: list[Any] = []
    with accepting(store, seen) as agent:
        # The only key in ~/.config/sdmesh is found by itself.
        ok = run("submit", str(vm_file), "--name", "web", "--agent", agent.url)
        assert ok.exit_code == 0 and ok.output.strip() == "web", ok.output
        # Operate cannot sign shell: the agent refuses with the reason.
        shell = run("submit", str(shell_file), "--name", "sh", "--agent", agent.url)
        assert shell.exit_code == 2, shell.output  # a 4xx is bad input (cli.md)
        assert "this host grants that key operate only" in shell.output
        # --key and SDMESH_OPERATOR_KEY name the key explicitly.
        explicit = run(
            "submit",
            str(vm_file),
            "--name",
            "w2",
            "--key",
            str(keys / "oliver.key"),
            "--agent",
            agent.url,
        )
        assert explicit.exit_code == 0
        from_env = run(
            "submit",
            str(vm_file),
            "--name",
            "w3",
            "--agent",
            agent.url,
            env={"SDMESH_OPERATOR_KEY": str(keys / "oliver.key")},
        )
        assert from_env.exit_code == 0
        # Revoked on the host: the same signed submission is refused.
        run("operator", "revoke", "oliver", "--dir", str(store))
        refused = run("submit", str(vm_file), "--name", "w4", "--agent", agent.url)
        assert refused.exit_code == 2 and "revoked" in refused.output
    assert [r.reason if r else None for r in seen] == [
        None,
        "role-not-granted",
        None,
        None,
        "revoked-key",
    ]


def test_submit_without_a_key_sends_no_signature_and_a_loose_key_is_refused(tmp_path: Path) -> None:
    vm_file = tmp_path / "vm.sf"
    vm_file.write_text(VM_POOL)
    with FakeAgent({("POST", "/v1/pools"): lambda _: (200, {"pool": "web"})}) as agent:
        assert run("submit", str(vm_file), "--name", "web", "--agent", agent.url).exit_code == 0
        assert "signature" not in agent.requests[-1][2]
        run("operator", "keygen", "oliver")
        key = tmp_path / "config" / "sdmesh" / "oliver.key"
        os.chmod(key, 0o644)
        loose = run("submit", str(vm_file), "--agent", agent.url)
        assert loose.exit_code == 2 and "mode 0644" in loose.output
        assert len(agent.requests) == 1  # nothing sent with a key others can read


def test_terminate_signs_up_to_the_pools_generation_plus_the_slack(tmp_path: Path) -> None:
    """``sdmesh terminate --key``: the floor the agent checks against asked first (GET
    /v1/pools/P/termination, not the pool's status: a stale run there, or a 404 while the
    agent knows the pool from gossip), then the signature in the DELETE body, which a host
    trusting the key accepts; no key, no body."""
    from sdmesh.trust.termination import SLACK, TerminationSignature, termination_refusal

    from .fake_agent import pool_status

    run("operator", "keygen", "oliver")
    keys = tmp_path / "config" / "sdmesh"
    store = tmp_path / "operators.d"
    run("operator", "trust", str(keys / "oliver.pub"), "--role", "operate", "--dir", str(store))
    routes = {
        ("GET", "/v1/pools/web"): lambda _: (200, pool_status("web", "running", generation=2)),
        ("GET", "/v1/pools/web/termination"): lambda _: (
            200,
            {"pool": "web", "floor": 7, "sign_up_to": 7 + SLACK},
        ),
        ("DELETE", "/v1/pools/web"): lambda _: (202, {"pool": "web", "state": "terminating"}),
    }
    with FakeAgent(routes) as agent:  # type: ignore[arg-type]
        key = str(keys / "oliver.key")
        done = run("terminate", "web", "--key", key, "--agent", agent.url)
        assert done.exit_code == 0 and "terminating web" in done.output, done.output
        (_, _, asked), (method, _, body) = agent.requests
        assert asked is None and method == "DELETE"
        signed = TerminationSignature.from_text(body["signature"])
        assert (signed.pool, signed.generation, signed.signer) == ("web", 7 + SLACK, "oliver")
        trusted = TrustStore.load(store)
        assert termination_refusal(signed.encode(), "web", 7 + SLACK, trusted) is None
        agent.requests.clear()
        (keys / "oliver.key").rename(tmp_path / "elsewhere.key")  # no key: unsigned
        assert run("terminate", "web", "--agent", agent.url).exit_code == 0
        assert agent.requests == [("DELETE", "/v1/pools/web", None)]
        (tmp_path / "elsewhere.key").rename(keys / "oliver.key")
        agent.requests.clear()
        unknown = run("terminate", "nowhere", "--key", key, "--agent", agent.url)
        assert unknown.exit_code != 0  # where DELETE would be a 404 too: nothing sent
        assert [method for method, _, _ in agent.requests] == ["GET"]
    help_text = run("terminate", "--help").output
    assert "--key" in help_text and "operate" in help_text
