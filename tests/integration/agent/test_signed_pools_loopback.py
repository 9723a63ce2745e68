"""Operator signatures across real agents (docs/security.md): a host runs a leaf only under a
signature from an operator it trusts, whatever another host accepted; an unsigned submission
to an agent with no signing key of its own is refused, and nothing is created anywhere."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from sdmesh.trust.keys import OperatorKey, write_key_pair
from sdmesh.trust.roles import Role
from sdmesh.trust.store import trust_operator

from .test_pools_loopback import DESCRIPTORS, PoolMesh


def _trust_dir(root: Path, name: str, *trusted: OperatorKey) -> str:
    directory = root / f"{name}-operators.d"
    directory.mkdir(mode=0o700)
    for key in trusted:
        trust_operator(directory, key.public, Role.ADMIN, "test")
    return str(directory)


def test_a_host_that_does_not_trust_the_signer_runs_none_of_its_leaves(
    pool_mesh: PoolMesh, tmp_path: Path
) -> None:
    alice = OperatorKey.generate("alice")
    (tmp_path / "keys").mkdir(mode=0o700)
    private, _ = write_key_pair(alice, tmp_path / "keys")
    # n0 trusts nobody; n1 trusts alice. Neither signs for API callers.
    pool_mesh.env["n0"] = {
        "SDMESH_OPERATORS_DIR": _trust_dir(tmp_path, "n0"),
        "SDMESH_API_SIGNING_KEY": "",
    }
    pool_mesh.env["n1"] = {
        "SDMESH_OPERATORS_DIR": _trust_dir(tmp_path, "n1", alice),
        "SDMESH_API_SIGNING_KEY": "",
    }
    pool_mesh.start_host("n0", None, cpus=8, memory_mib=8192)
    pool_mesh.start_host("n1", "n0", cpus=8, memory_mib=8192)
    pool_mesh.wait(
        lambda: list(pool_mesh.view("n1").values()).count("alive") == 2, 30, "no mesh of two"
    )

    # Unsigned, to an agent without a signing key: 403 naming why; nothing was created.
    descriptor = (DESCRIPTORS / "examples" / "demoPool.sf").read_text()
    body = json.dumps({"name": "nosig", "descriptor": descriptor}).encode()
    request = urllib.request.Request(
        pool_mesh.url("n1") + "/v1/pools",
        data=body,
        method="POST",
        headers={**pool_mesh.headers(), "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("an unsigned submission was accepted")
    except urllib.error.HTTPError as error:
        answer = error.read()
        assert error.code == 403, answer
        assert b"no operator signature" in answer

    # Signed by alice, submitted to n1 (which trusts her): leaves spread to n0 too, which
    # refuses them; n0 defines no domain, n1 runs what it was given.
    demo = str(DESCRIPTORS / "examples" / "demoPool.sf")
    pool_mesh.cli("n1", "submit", demo, "--name", "signed", "--key", str(private))
    deadline = time.monotonic() + 60
    status = pool_mesh.status("n1", "signed")
    while time.monotonic() < deadline and status.get("state") != "failed":
        time.sleep(0.5)
        status = pool_mesh.status("n1", "signed")
    assert status.get("state") == "failed", status
    assert "(alice), which this host does not trust" in str(status.get("reason")), status
    components = status.get("components", [])
    assert isinstance(components, list)
    assert any(c["host"] == "n0" and c["state"] == "failed" for c in components), status
    assert pool_mesh.domains("n0") == []

    # Ending it (issue 12): unsigned, through an agent with no signing key of its own, is
    # refused with the fix named, and ends nothing; signed by alice, it ends.
    before = pool_mesh.status("n1", "signed")
    unsigned = pool_mesh.cli("n1", "terminate", "signed", check=False)
    assert unsigned.returncode == 2, unsigned
    assert "sdmesh terminate --key KEY" in unsigned.stderr, unsigned.stderr
    assert pool_mesh.status("n1", "signed")["state"] == before["state"]
    done = pool_mesh.cli("n1", "terminate", "signed", "--key", str(private))
    assert "terminating signed" in done.stdout
    # n0 trusts nobody: alice's tombstone, gossiped to it, is refused there and counted.
    from .test_authz_loopback import refusals

    pool_mesh.wait(
        lambda: refusals(pool_mesh, "n0").get("tombstone", 0) >= 1,
        30,
        "n0 never refused the tombstone of a key it does not trust",
    )
