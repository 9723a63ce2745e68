"""Reaper decisions: pure inputs, pure outputs."""

from __future__ import annotations

from pathlib import Path

from sdmesh.hypervisor.driver import ManagedDomain
from sdmesh.hypervisor.events import DomainState
from sdmesh.hypervisor.reaper import plan_reap
from sdmesh.hypervisor.spec import SdmeshMetadata
from sdmesh.storage.model import OwnerTag, Volume

NOW = 10_000.0
GRACE = 300.0


def domain(name: str, pool: str, created_at: float | None) -> ManagedDomain:
    meta = SdmeshMetadata(pool, name, 1, "sha256:" + "0" * 64, created_at=created_at)
    return ManagedDomain(name, "uuid-" + name, DomainState.RUNNING, meta, 128, 1)


def volume(name: str, pool: str, created_at: float, partial: bool = False) -> Volume:
    return Volume(
        Path(f"/v/{name}"),
        "qcow2",
        "file",
        "qcow2",
        OwnerTag(pool, name),
        created_at,
        partial=partial,
    )


def test_decisions() -> None:
    plan = plan_reap(
        domains=[
            domain("live", "alive", NOW - 10_000),
            domain("orphan", "gone", NOW - 1_000),
            domain("young", "unknown-yet", NOW - 10),
            domain("ended", "terminated", NOW - 1),
            domain("ancient", "gone", None),
        ],
        volumes=[
            volume("live.qcow2", "alive", NOW - 10_000),
            volume("orphan.qcow2", "gone", NOW - 1_000),
            volume("young.qcow2", "unknown-yet", NOW - 10),
            volume(".x.partial-1", "alive", NOW - 1_000, partial=True),
            volume(".y.partial-2", "", NOW - 5, partial=True),
        ],
        live_pools={"alive"},
        terminated_pools={"terminated"},
        now=NOW,
        grace_s=GRACE,
    )
    assert [d.name for d in plan.domains] == ["orphan", "ended", "ancient"]
    assert [v.path.name for v in plan.volumes] == ["orphan.qcow2", ".x.partial-1"]
    assert plan.kept_in_grace == 3  # young domain, young volume, young partial
    reasons = {d.name: d.reason for d in plan.decisions}
    assert "terminated" in reasons["ended"] and "no longer exists" in reasons["orphan"]
    assert "crashed" in reasons["/v/.x.partial-1"]


def test_nothing_to_do() -> None:
    plan = plan_reap(domains=[], volumes=[], live_pools=[], now=NOW, grace_s=GRACE)
    assert plan.domains == () and plan.volumes == () and plan.kept_in_grace == 0
