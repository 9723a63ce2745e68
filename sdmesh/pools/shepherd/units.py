"""Where a pool's units run: placing every unit up front, placing one again (after a
refusal, a loss or a failed restart) with a generation bump, replaying what a moved unit had
done on its new host, and releasing everything at a terminating takeover."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from sdmesh.pools.layout import Layout, Unit
from sdmesh.pools.placement import NO_SHELL_ANYWHERE, Demand, HostOffer, place, shell_host
from sdmesh.pools.records import Order
from sdmesh.pools.shepherd.actions import SendOrder
from sdmesh.pools.shepherd.state import ShepherdState


class UnitPlacement(ShepherdState):
    """Placement and replay of units."""

    def _place_all(self) -> None:
        """Place every unit not on a live member. Units on a host that left stay there (its
        VMs run on), and so do units on a lost host until its reclaim completes (it may still
        run them); local leaves go with the shepherd."""
        for host in sorted(set(self.placement.values())):
            if host not in self.offers and host not in self.away:
                self._lose(host)
        units = [
            u
            for u in self.layout.units.values()
            if self.placement.get(u.path) not in self.away
            and self.placement.get(u.path) not in self.reclaiming
            and not (
                self._kept_in_isolation(u.path) and self.placement.get(u.path) in self.reclaimed
            )
        ]
        placed = {u: h for u, h in self.placement.items() if h in self.offers}
        plan = place([u.demand for u in units], self.offers.values(), already=placed)
        self.placement.update(plan.assignments)
        for local in self.layout.local:
            if self.placement.get(local) not in self.offers:
                self.placement[local] = self._local_host(local)
        for missing in plan.unplaced:
            self._warn(missing.path, f"cannot be placed: {missing.reason}")

    def _local_host(self, path: str) -> str:
        """Local leaves go with the shepherd; shell ones to a host that allows shell (the
        shepherd first). With none, the shepherd's own refusal (naming allow-shell) becomes
        the leaf's failure."""
        if path not in self.layout.shell:
            return self.me
        host = shell_host(self.offers.values(), self.me)
        if host is None:
            self._warn(path, f"cannot be placed: {NO_SHELL_ANYWHERE}")
            return self.me
        return host

    def _release_everything(self) -> None:
        for unit_path, host in sorted(self.placement.items()):
            unit = self.layout.units.get(unit_path)
            leaves = unit.leaves if unit is not None else (unit_path,)
            for path in reversed(leaves):  # a VM before its disks
                leaf = self.leaves.get(path)
                if leaf is not None:
                    leaf.state = "terminated"
                    leaf.host = host
                if host in self.offers:
                    order = Order(
                        self.pool,
                        self.generation,
                        self.me,
                        self.digest,
                        path,
                        "terminate",
                        unit_path,
                    )
                    self._actions.append(SendOrder(host, order))

    def _move(self, unit_path: str, *, reason: str, keep: str | None = None) -> bool:
        """Place a unit again (elsewhere, unless ``keep`` is live and admits it); bump the
        generation so copies left behind are stale, and save before any order uses it."""
        unit = self.layout.units.get(unit_path)
        old = self.placement.pop(unit_path, None)
        if unit is None:  # a local leaf: it runs beside us
            self.placement[unit_path] = self.me
            chosen: str | None = self.me
        else:
            units, offers = self.layout.units, self.offers
            others = {u: h for u, h in self.placement.items() if u in units and h in offers}
            exclude = set(self.refused.get(unit_path, set()))
            if keep is None and old is not None:
                exclude.add(old)
            hosts = list(offers.values())
            if keep is not None and keep in offers:
                exclude.discard(keep)
                # Its VM has just ended there: what the host last gossiped still counts it.
                hosts = [_freed(h, unit.demand) if h.name == keep else h for h in hosts]
            placed = [u.demand for u in self.layout.units.values() if u.path in others]
            demand = _with_preference(unit.demand, keep)
            plan = place([*placed, demand], hosts, exclude=exclude, already=others)
            chosen = plan.assignments.get(unit_path)
            if chosen is None and keep is not None:  # not in place after all: anywhere else
                exclude.add(keep)
                plan = place([*placed, unit.demand], hosts, exclude=exclude, already=others)
                chosen = plan.assignments.get(unit_path)
            if chosen is None:
                why = plan.unplaced[0].reason if plan.unplaced else "no host"
                self._warn(unit_path, f"cannot be placed again ({reason}): {why}")
                if old is not None:
                    self.placement[unit_path] = old
                return False
            self.placement[unit_path] = chosen
        if old is not None and old != chosen:
            self.generation += 1
        self._save()
        return True

    def _replay_unit(self, unit_path: str) -> None:
        """Redo on the unit's new host what the engine believes is done: every deployed
        leaf's deploy in order, then every started leaf's start (a disk before its VM)."""
        host = self.placement[unit_path]
        unit = self.layout.units.get(unit_path)
        order = {path: i for i, path in enumerate(unit.leaves)} if unit is not None else {}
        leaves = sorted(
            (leaf for leaf in self.leaves.values() if leaf.unit == unit_path),
            key=lambda leaf: order.get(leaf.path, len(order)),  # the unit's order: disks first
        )
        for leaf in leaves:
            leaf.host = host
        chain = deque(
            [(leaf.path, "deploy") for leaf in leaves if leaf.state != "created"]
            + [(leaf.path, "start") for leaf in leaves if leaf.state in ("starting", "running")]
        )
        self.replays[unit_path] = chain
        self._continue_replay(unit_path)

    def _continue_replay(self, unit_path: str) -> None:
        chain = self.replays.get(unit_path)
        if chain:
            path, op = chain[0]
            self._send(self.leaves[path], op, self.placement[unit_path])
            return
        self.replays.pop(unit_path, None)
        for leaf in self.leaves.values():
            if leaf.unit == unit_path and leaf.engine_op is not None:
                self._send(leaf, leaf.engine_op, self.placement[unit_path])

    def _resend_all(self) -> None:
        for unit_path, chain in self.replays.items():
            if chain:
                path, op = chain[0]
                self._send(self.leaves[path], op, self.placement[unit_path])
        for leaf in self.leaves.values():
            if leaf.engine_op is not None and leaf.unit not in self.replays:
                self._send(leaf, leaf.engine_op, leaf.host)


def _freed(offer: HostOffer, demand: Demand) -> HostOffer:
    """``offer`` with the memory of a VM that has just ended there given back (the host's
    gossiped figure lags: placing the VM again in place must not fail on its own ghost; the
    host's admission still checks what it really has)."""
    return replace(offer, memory_free_mib=offer.memory_free_mib + demand.memory_mib)


def _with_preference(demand: Demand, host: str | None) -> Demand:
    """Restarting in place: the same demand, pinned to its old host when it is still live."""
    if host is None:
        return demand
    return replace(demand, pinned=host)  # every other field kept (disk_mib too)


def unit_of(layout: Layout, path: str) -> Unit | None:
    unit_path = layout.unit_of.get(path)
    return layout.units.get(unit_path) if unit_path else None
