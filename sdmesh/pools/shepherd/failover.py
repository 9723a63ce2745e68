"""Hosts coming and going: membership changes, graceful departures (``AWAY_GRACE``), lost
hosts' reclaim (their units move only once a majority says their lease ended), hosts coming
back, and units or leaves that died: rebuilt elsewhere per their ``restart``, else ended."""

from __future__ import annotations

from sdmesh.lifecycle import model as lm
from sdmesh.pools.placement import HostOffer
from sdmesh.pools.shepherd.actions import CancelReclaim
from sdmesh.pools.shepherd.engine_link import EngineLink
from sdmesh.pools.shepherd.state import AWAY_GRACE, Leaf


class Failover(EngineLink):
    """Loss, reclaim and departure handling (HA)."""

    def _on_members(self, offers: tuple[HostOffer, ...], away: frozenset[str]) -> None:
        before = set(self.offers)
        self.offers = {offer.name: offer for offer in offers}
        for back in [host for host in self.away if host in self.offers]:
            del self.away[back]  # its agent is back: its inventory reconciles what it runs
            self.vouched.pop(back, None)
            self._save()
        for back in sorted((self.reclaiming | self.reclaimed) & set(self.offers)):
            if back in self.reclaiming:
                self._actions.append(CancelReclaim(back))
            self.reclaiming.discard(back)
            self.reclaimed.discard(back)
            self._wake(back)
        for host in sorted(away - set(self.offers) - set(self.away)):
            self._host_away(host)
        for gone in sorted(before - set(self.offers) - set(self.away)):
            self._lose(gone)

    def _on_reclaimed(self, host: str) -> None:
        """The lost host surely stopped its fenceable VMs: rebuild its units elsewhere (per
        their ``restart``; ``isolation "keep"`` ones wait for the host), and move the
        operations that waited for it."""
        if host not in self.reclaiming:
            return  # cancelled (it came back), or not asked by this core
        self.reclaiming.discard(host)
        if host in self.offers or host in self.away:
            return
        self.reclaimed.add(host)
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            leaves = [leaf for leaf in self.leaves.values() if leaf.unit == unit_path]
            if unit_path not in self.replays and all(
                leaf.state in ("created", "deploying", "terminated") for leaf in leaves
            ):
                continue  # nothing of it confirmed there: its waiting operations move it
            self._unit_down(unit_path, host)
        for leaf in list(self.leaves.values()):
            op = leaf.engine_op
            if (
                op is not None
                and self.placement.get(leaf.unit) == host
                and leaf.unit not in self.replays
            ):
                self._engine_op(leaf.path, op)

    def _wake(self, host: str) -> None:
        """``host`` is back: send again what waited for it (it answers at once for what it
        did already)."""
        for unit_path, chain in self.replays.items():
            if chain and self.placement.get(unit_path) == host:
                path, op = chain[0]
                self._send(self.leaves[path], op, host)
        for leaf in self.leaves.values():
            if (
                leaf.engine_op is not None
                and leaf.unit not in self.replays
                and self.placement.get(leaf.unit) == host
            ):
                self._send(leaf, leaf.engine_op, host)

    def _host_away(self, host: str) -> None:
        """A host left gracefully: its VMs keep running, so its units stay placed there for
        ``AWAY_GRACE``; only units with an operation under way there count as lost now (the
        host will not finish it). What it runs is vouched for in the saved record, so a later
        shepherd keeps it there too."""
        self.away[host] = self._now + AWAY_GRACE
        self._arm(f"away:{host}", AWAY_GRACE)
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            if unit_path in self.replays or any(
                leaf.unit == unit_path and leaf.engine_op is not None
                for leaf in self.leaves.values()
            ):
                self._unit_down(unit_path, host, "left in the middle of an operation")
        known = self.vouched.setdefault(host, {})
        for leaf in self.leaves.values():
            if self.placement.get(leaf.unit) != host or leaf.path in known:
                continue
            if not self.begun:
                # A fresh core learns of a leave it did not see (its predecessor died too):
                # a leaver finishes its operations first, so what the record places there
                # runs there. Wrong only for a pool still deploying; that costs a restart
                # after the grace, where rebuilding now would run the VM twice.
                known[leaf.path] = "running"
            elif leaf.state in ("deployed", "running") and leaf.engine_op is None:
                known[leaf.path] = leaf.state
        self._save()

    def _host_down(self, host: str) -> None:
        for unit_path in [u for u, h in self.placement.items() if h == host]:
            self._unit_down(unit_path, host)

    def _unit_down(self, unit_path: str, host: str, why: str = "died") -> None:
        leaves = [leaf for leaf in self.leaves.values() if leaf.unit == unit_path]
        unit = self.layout.units.get(unit_path)
        restart = unit.restart if unit is not None else "always"  # local leaves follow us
        active = [leaf for leaf in leaves if leaf.state not in ("created", "terminated")]
        if not active or self.engine.root.state.ended:
            return
        if self._kept_in_isolation(unit_path) and host not in self.offers:
            return  # its host keeps it running: it stays there until the host is back
        if self.state == "terminating":
            for leaf in active:
                if leaf.engine_op == "terminate":
                    self._engine_done(leaf, None)
            return
        if restart != "never" and self._move(unit_path, reason=f"{host} {why}"):
            self._replay_unit(unit_path)
            return
        for leaf in active:
            self._leaf_gone(leaf, f"its host {host} {why}")

    def _host_failed(self, leaf: Leaf, op: str, reason: str) -> None:
        self._op_failed(leaf, op, reason)

    def _op_failed(self, leaf: Leaf, op: str, reason: str) -> None:
        if self.replays.pop(leaf.unit, None) is None and leaf.engine_op == op:
            self._engine_done(leaf, reason)
        else:
            self._leaf_gone(leaf, reason)

    def _leaf_lost(self, leaf: Leaf, reason: str) -> None:
        """A leaf's VM died (or its restart failed): restart per policy, else end it."""
        unit = self.layout.units.get(leaf.unit)
        restart = unit.restart if unit is not None else "never"
        if (
            restart != "never"
            and self.state != "terminating"
            and not self.engine.root.state.ended
            and leaf.engine_op != "terminate"
        ):
            host = self.placement.get(leaf.unit, "")
            self._warn(leaf.unit, f"restarting ({reason})")
            if reason.startswith("restart on"):  # it failed there: try another host
                self.refused.setdefault(leaf.unit, set()).add(host)
                keep = None
            else:
                keep = host
            if self._move(leaf.unit, reason=reason, keep=keep):
                self._replay_unit(leaf.unit)
                return
        self._leaf_gone(leaf, reason)

    def _leaf_gone(self, leaf: Leaf, reason: str) -> None:
        record = lm.TerminationRecord.abnormal(reason, leaf.path)
        if leaf.engine_op is not None:
            self._engine_done(leaf, reason)
        else:
            self._feed(lm.LeafEnded(leaf.path, record))
