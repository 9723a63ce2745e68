"""A host on libvirt's test driver runs the leaves of a signed pool, and nothing of a pool
that is unsigned, signed by an unknown or revoked key, or tampered with after signing: the
host-side check (``leaf_refusal``) made where the agent runs a leaf, before the component
factory touches libvirt."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sdmesh.components.context import HostContext
from sdmesh.components.registry import component_factory
from sdmesh.hypervisor import LibvirtDriver
from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.language import resolve_text
from sdmesh.pools import shepherd as sc
from sdmesh.pools.layout import is_leaf, layout, skeleton, walk
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.records import PoolRecord, PoolSpec
from sdmesh.pools.signing import envelope_of, leaf_refusal, sign_request
from sdmesh.pools.submission import build_spec_and_tree, request_body
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import revoke_operator

from ..trust.helpers import VM_POOL, trusted_dir

OLIVER = OperatorKey.generate("oliver")
MALLORY = OperatorKey.generate("mallory")


def signed_pool(name: str, key: OperatorKey | None, edit: str = "") -> tuple[PoolSpec, bytes]:
    """What the shepherd holds: the spec as the agent built it, and the record's envelope."""
    resolved = resolve_text(VM_POOL)
    body = request_body(resolved, name)
    if key is not None:
        sign_request(body, resolved, key, time.time())
    if edit:  # a member altering the descriptor after it was signed
        body["descriptor"] = str(body["descriptor"]).replace("base.qcow2", edit)
    spec, _ = build_spec_and_tree(body)
    envelope = envelope_of(body)
    return spec, envelope.encode() if envelope is not None else b""


async def host_runs(
    trust: HostTrust, uri: str, state: Path, spec: PoolSpec, record_sig: bytes
) -> tuple[int, list[str]]:
    """Run every leaf the shepherd orders, as a host would: (domains defined, refusals)."""
    tree = resolve_text(spec.text).root
    record = PoolRecord(spec.pool, spec.digest, 1, "h1", signature=record_sig)
    core = sc.Shepherd(record, tree, layout(tree), spec.kinds, (HostOffer("h1", 8, 8192, 8192),))
    orders = [a.order for a in core.handle(sc.Begin(), 0.0) if isinstance(a, sc.SendOrder)]
    assert orders
    signature = orders[0].signature
    root = skeleton(tree)
    refusals: list[str] = []
    async with LibvirtDriver(uri) as driver:
        caps = await driver.capabilities()
        context = HostContext(driver, caps, state, spec.pool, 1, f"sha256:{spec.digest}", "h1")
        made: dict[str, object] = {}
        for node in walk(root):
            if not is_leaf(node):
                continue
            refusal = leaf_refusal(trust, signature, spec, spec.pool, node, time.time())
            if refusal is not None:
                refusals.append(refusal.reason)
                continue
            component = component_factory(context)(node, root, made, lambda _: None)  # type: ignore[arg-type]
            made[node.path] = component
            await component.deploy()
        for path, component in made.items():  # start orders are checked again
            node = next(n for n in walk(root) if n.path == path)
            assert leaf_refusal(trust, signature, spec, spec.pool, node, time.time()) is None
            await component.start()  # type: ignore[attr-defined]
        defined = len(await driver.list_managed(spec.pool))
        await context.close()
    return defined, refusals


@pytest.fixture
def host(tmp_path: Path) -> tuple[str, Path]:
    silence_libvirt_stderr()
    uri = write_simulated_host(tmp_path / "host.xml", cpus=8, memory_mib=8192)
    state = tmp_path / "volumes"
    state.mkdir()
    return uri, state


def test_a_signed_pool_runs_and_nothing_else_does(tmp_path: Path, host: tuple[str, Path]) -> None:
    uri, state = host
    directory = trusted_dir(tmp_path, (OLIVER, Role.OPERATE))
    trust = HostTrust.open(directory)

    def run(spec: PoolSpec, signature: bytes) -> tuple[int, list[str]]:
        return asyncio.run(host_runs(trust, uri, state, spec, signature))

    assert run(*signed_pool("good", OLIVER)) == (1, [])
    assert run(*signed_pool("unsigned", None)) == (0, ["unsigned", "unsigned"])
    assert run(*signed_pool("stranger", MALLORY)) == (0, ["unknown-key", "unknown-key"])
    tampered = signed_pool("tampered", OLIVER, edit="other.qcow2")
    assert run(*tampered) == (0, ["wrong-digest", "wrong-digest"])
    revoke_operator(directory, "oliver")
    trust.reload()
    assert run(*signed_pool("revoked", OLIVER)) == (0, ["revoked-key", "revoked-key"])
    counts = dict(trust.refusals.samples())
    assert counts["unsigned"] == counts["unknown-key"] == counts["revoked-key"] == 2
