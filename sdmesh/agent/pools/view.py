"""Membership view: who is live, leaving or away, the majority rule, offers and
who shepherds each pool (rendezvous hashing over the live members)."""

from __future__ import annotations

import logging
import time

from sdmesh.agent.pools.state import PoolState
from sdmesh.membership import Member, State
from sdmesh.pools.ownership import Owners, has_quorum, is_witness, shepherd_candidates
from sdmesh.pools.placement import HostOffer

log = logging.getLogger(__name__)


class MembershipView(PoolState):
    """What this agent sees of the mesh, as the pool service needs it."""

    def live_members(self) -> list[Member]:
        """Alive and suspect members: a suspicion is not a death, and moving VMs or the
        shepherd on every suspicion would churn generations under load. Not members that
        are leaving (they handed their pools over), ourselves included once we leave."""
        return [m for m in self.node.core.live_members() if not self._departed(m.name)]

    def _departed(self, name: str) -> bool:
        if name == self.name:
            return self.leaving
        until = self.departing.get(name)
        return until is not None and time.monotonic() < until

    def away_hosts(self) -> frozenset[str]:
        """Members whose VMs run on without their agent: left gracefully, or leaving."""
        left = {m.name for m in self.node.core.members() if m.state is State.LEFT}
        return frozenset(left | {name for name in self.departing if self._departed(name)})

    def has_quorum(self) -> bool:
        """A strict majority of the members that have not left is alive in this agent's
        view, not even suspected: it may shepherd (take pools over, move VMs off hosts it
        cannot reach). Without one it may be the cut-off side of a partition, where acting
        would run VMs twice. Suspects do not count: a cut-off agent suspects everyone
        within a few probes, long before its first death verdict, so it stops before it
        could act on one; the connected side suspects only what it lost."""
        counted = [
            m
            for m in self.node.core.members()
            if m.state is not State.LEFT and not self._departed(m.name)
        ]
        alive = [m for m in counted if m.state is State.ALIVE]
        return has_quorum(len(alive), len(counted))

    def _being_handed_over(self, pool: str) -> bool:
        """The pool's shepherd, counting members that are leaving, is one of them: it hands
        the pool over itself (or, failing that, it is taken over once its leave shows)."""
        everyone = shepherd_candidates((m.name, m.meta) for m in self.node.core.live_members())
        if everyone != self._owners_all.members:
            self._owners_all = Owners(everyone)
        return self._owners_all.shepherd(pool) in self.departing

    def _prune_departing(self) -> None:
        now = time.monotonic()
        for name, until in list(self.departing.items()):
            state = self.node.core.state_of(name)
            if until <= now or state is None or not state.live:
                del self.departing[name]  # gone for real now, or it never left: forget it

    def counted_members(self) -> list[Member]:
        """The members the shepherds here count as live: the live ones, and those lost too
        recently to act on (``LossConfirmer``): a false "dead" refuted within its window
        moves no VM and no pool."""
        live = self.live_members()
        pending = self._losses.unconfirmed() - {m.name for m in live} - self.away_hosts()
        if not pending:
            return live
        lost = [
            m
            for m in self.node.core.members()
            if m.name in pending and m.state is not State.LEFT and not self._departed(m.name)
        ]
        return live + lost

    def offers(self) -> tuple[HostOffer, ...]:
        out = []
        for member in self.counted_members():
            capacity = member.meta.get("capacity") if isinstance(member.meta, dict) else None
            if not isinstance(capacity, dict) or not _whole(capacity.get("vcpus")):
                if _host_starting(member.meta):
                    out.append(HostOffer(member.name, 0, 0, 0, disk_free_mib=0))
                continue  # not yet announced its capacity: nothing (new) to place there
            labels = member.meta.get("labels")
            labels = labels if isinstance(labels, list) else []
            out.append(
                HostOffer(
                    member.name,
                    _whole(capacity.get("vcpus")),
                    _whole(capacity.get("memory_mib")),
                    _free_memory_mib(capacity),
                    frozenset(str(label) for label in labels),
                    _disk_free_mib(capacity),
                    shell=member.meta.get("shell") is True,
                    witness=is_witness(member.meta),
                )
            )
        return tuple(out)

    def shepherd_for(self, pool: str) -> str | None:
        live = shepherd_candidates((m.name, m.meta) for m in self.counted_members())
        if live != self._owners.members:
            self._owners = Owners(live)
        return self._owners.shepherd(pool)

    def _address(self, name: str) -> tuple[str, int] | None:
        member = self.node.core.member(name)
        return (member.addr[0], member.addr[1]) if member is not None else None


def _host_starting(meta: object) -> bool:
    """A host agent that has not opened its hypervisor yet (``preliminary_meta``): after a
    restart it runs its VMs on (docs/ha.md), so its shepherds must count it present, not lost
    (a reclaim would fence them all). It offers nothing: no new VM goes there until it says
    what it has, but the VMs placed there stay."""
    if not isinstance(meta, dict) or is_witness(meta):
        return False
    return meta.get("hypervisor") not in (None, "none")


def _whole(value: object) -> int:
    """A capacity figure from a member's metadata: a non-negative int, else 0 (a peer's
    metadata is only checked for shape: ``int()`` of a string, NaN or inf raised here, in
    every shepherd's placement)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _disk_free_mib(capacity: dict[str, object]) -> int | None:
    """Free disk where a member keeps its volumes; None (no disk check) when it does not say,
    as agents from before disk-aware placement do not."""
    free = capacity.get("disk_free_mib")
    return free if isinstance(free, int) and not isinstance(free, bool) else None


def _free_memory_mib(capacity: dict[str, object]) -> int:
    """Memory a member can still give: what its kernel reports free, or, where that means
    nothing (the test driver), its total less what its VMs hold."""
    free = capacity.get("memory_free_mib")
    if isinstance(free, int):
        return free
    total = capacity.get("memory_mib")
    committed = capacity.get("memory_committed_mib")
    total_mib = total if isinstance(total, int) else 0
    return max(0, total_mib - (committed if isinstance(committed, int) else 0))
