"""The lifecycle engine inside the shepherd: its leaf operations become orders to the hosts
their units are placed on (or wait for a reclaim, a rebuild, an away host's word), its state
changes become the pool's, and the pool counts as running only once no operation is under way."""

from __future__ import annotations

from sdmesh.lifecycle import model as lm
from sdmesh.pools.shepherd.actions import ComponentChanged, SetTimer
from sdmesh.pools.shepherd.state import Leaf
from sdmesh.pools.shepherd.units import UnitPlacement


class EngineLink(UnitPlacement):
    """The engine's actions turned into orders, and hosts' results fed back to it."""

    def _feed(self, event: lm.Event) -> None:
        for action in self.engine.handle(event, self._now):
            self._engine_action(action)

    def _engine_action(self, action: lm.Action) -> None:
        if isinstance(action, lm.LeafDeploy):
            self._engine_op(action.path, "deploy")
        elif isinstance(action, lm.LeafStart):
            self._engine_op(action.path, "start")
        elif isinstance(action, lm.LeafTerminate):
            self._engine_op(action.path, "terminate")
        elif isinstance(action, lm.SetTimer):
            name = f"engine:{action.path}:{action.token}"
            self._engine_timers[name] = (action.path, action.token)
            self._actions.append(SetTimer(name, action.at))
        elif isinstance(action, lm.StateChanged):
            leaf = self.leaves.get(action.path)
            if leaf is not None:
                leaf.state = action.state.value
                self._actions.append(
                    ComponentChanged(
                        action.path,
                        self.kinds.get(action.path, action.kind),
                        action.state.value,
                        leaf.host or self.placement.get(leaf.unit, ""),
                        action.record.description if action.record is not None else "",
                    )
                )
            if action.path == self.engine.root.path:
                self._root_changed(action.state, action.record)
        elif isinstance(action, lm.ApplicationEnded):
            self.ended = True
            failed = not action.record.normal
            self._set_pool("failed" if failed else "terminated", action.record.description)
            self._save()
        elif isinstance(action, lm.Problem):
            self._warn(action.path, action.message)

    def _root_changed(self, state: lm.State, record: lm.TerminationRecord | None) -> None:
        if state is lm.State.TERMINATING and self.state not in ("terminating",):
            self._set_pool("terminating", record.description if record else "")

    def _settle(self) -> None:
        """The pool runs once its root does and no leaf operation is under way: a Parallel
        with ``asynchCreateChild`` counts as started before its children are up, and
        ``submit --wait`` must not return before the VMs are."""
        if self.state != "deploying" or self.engine.root.state is not lm.State.RUNNING:
            return
        if self.replays or any(leaf.engine_op is not None for leaf in self.leaves.values()):
            return
        self._set_pool("running")
        self._save()

    def _engine_op(self, path: str, op: str) -> None:
        leaf = self.leaves.get(path)
        if leaf is None:  # a leaf the layout did not see (created by a combinator at run time)
            leaf = self.leaves[path] = Leaf(path, path)
            self.placement.setdefault(path, self.me)
        leaf.engine_op = op
        leaf.retries = 0
        host = self.placement.get(leaf.unit)
        if op == "terminate" and (host is None or host not in self.offers):
            # Nothing to ask of a dead or unknown host; it cleans up when it comes back.
            self._engine_done(leaf, None)
            return
        if host is not None and host not in self.offers and host not in self.away:
            if host not in self.reclaimed:
                self._lose(host)
            if host in self.reclaiming or self._kept_in_isolation(leaf.unit):
                leaf.host = host
                return  # sent (or moved) once the host is back or surely stopped it
        if host is not None and host in self.away:
            if self._vouched_for(host, path, op):
                leaf.host = host  # it runs there and keeps running: done, as the host said
                self._engine_done(leaf, None)
            elif self._move(leaf.unit, reason=f"{host} left without it"):
                self._replay_unit(leaf.unit)  # what the unit has done so far, then this op
            else:
                self._engine_done(leaf, f"no live host can take {leaf.unit}")
            return
        if host is None or host not in self.offers:
            if not self._move(leaf.unit, reason=f"{host or 'no host'} is not a live member"):
                self._engine_done(leaf, f"no live host can take {leaf.unit}")
                return
            host = self.placement[leaf.unit]
        if leaf.unit in self.replays:
            return  # sent when the unit's rebuild is done
        self._send(leaf, op, host)

    def _engine_done(self, leaf: Leaf, error: str | None) -> None:
        op = leaf.engine_op
        if op is None:
            return
        leaf.engine_op = None
        self._feed(lm.LeafDone(leaf.path, op, error))
