"""What hosts tell the shepherd about its orders: immediate answers (accepted, refused,
fenced, unreachable: retried, moved, failed or stepping down), reports of finished operations
(advancing a rebuild or the engine), inventories (stale copies released, silent deaths
noticed), and the core's timers (retries, away graces, the engine's)."""

from __future__ import annotations

from sdmesh.lifecycle import model as lm
from sdmesh.pools.records import Order, Report
from sdmesh.pools.shepherd.actions import SaveRecord, SendOrder, Superseded
from sdmesh.pools.shepherd.events import Answered, Inventory
from sdmesh.pools.shepherd.failover import Failover
from sdmesh.pools.shepherd.state import MAX_RETRIES, RETRY_SECONDS, Leaf


class OrderBookkeeping(Failover):
    """Answers, reports, inventories and timers."""

    def _on_answer(self, answer: Answered) -> None:
        order = answer.order
        if answer.outcome == "fenced" and (
            answer.seen > self.generation
            or (answer.seen == self.generation and order.generation == self.generation)
        ):
            # Whatever the order (a release from the inventory included): someone else
            # holds this generation or a newer one. Fenced answers to orders from before our
            # own last bump (seen below our generation) are no news and fall through.
            self._step_down(answer.seen)
            return
        leaf = self.leaves.get(order.path)
        if leaf is None or leaf.host != answer.host or order.op != self._awaited(leaf):
            # About an order we have since replaced: the unit moved, or the leaf moved on.
            # Not the generation: moving one unit bumps it, and answers to the orders sent
            # to the other units before the bump still count (a refusal must not be lost).
            return
        if answer.outcome == "accepted":
            return
        if answer.outcome == "fenced":
            return  # an order from before our own last generation bump: superseded by us
        if answer.outcome == "unreachable":
            if answer.host not in self.offers and answer.host not in self.away:
                self._lose(answer.host)  # lost: moved once reclaimed, resent once back
                return
            if leaf.retries < MAX_RETRIES and answer.host in self.offers:
                leaf.retries += 1
                self._arm(f"retry:{leaf.path}:{order.op}", RETRY_SECONDS * leaf.retries)
                return
            self._host_failed(leaf, order.op, f"{answer.host} is unreachable")
            return
        # refused: the host will not admit the unit (capacity, terminated pool, bad order)
        self.refused.setdefault(leaf.unit, set()).add(answer.host)
        self._warn(leaf.unit, f"{answer.host} refused it: {answer.reason}")
        if order.op == "deploy" and self._move(leaf.unit, reason=answer.reason):
            self._resend(leaf, order.op)
        else:
            self._op_failed(leaf, order.op, f"{answer.host} refused: {answer.reason}")

    def _step_down(self, seen: int) -> None:
        """Act no more: drop what this call queued (a save would overwrite the newer
        shepherd's record, orders would be fenced) and tell the driver."""
        self.superseded = seen
        self._actions = [a for a in self._actions if not isinstance(a, (SaveRecord, SendOrder))]
        self._actions.append(Superseded(seen))

    def _on_report(self, report: Report) -> None:
        leaf = self.leaves.get(report.path)
        if leaf is None or report.host != leaf.host:
            return  # a stale copy's news (it is released through the inventory)
        if report.op == "ended":
            self._leaf_lost(leaf, report.error or "ended")
            return
        chain = self.replays.get(leaf.unit)
        if chain and chain[0] == (leaf.path, report.op):
            chain.popleft()
            if report.error is not None:
                del self.replays[leaf.unit]
                self._leaf_lost(leaf, f"restart on {report.host} failed: {report.error}")
                return
            if leaf.engine_op == report.op:
                self._engine_done(leaf, None)
            self._continue_replay(leaf.unit)
            return
        if leaf.engine_op == report.op:
            if report.error is not None and report.op != "terminate" and self._restartable(leaf):
                # A restartable VM's unit is rebuilt (elsewhere, its disk first), not
                # failed: a host's refusal ("no disk yet" after its agent restarted, say)
                # is that host's. Every live host refusing still fails it.
                self._leaf_lost(leaf, f"restart on {report.host} failed: {report.error}")
                return
            self._engine_done(leaf, report.error)

    def _restartable(self, leaf: Leaf) -> bool:
        unit = self.layout.units.get(leaf.unit)
        return unit is not None and unit.restart != "never"

    def _on_inventory(self, inventory: Inventory) -> None:
        """Release what a host runs but should not (stale copies after a move or a
        partition); leaves it should run but lost are handled as lost."""
        for path in sorted(inventory.leaves, reverse=True):
            leaf = self.leaves.get(path)
            placed = self.placement.get(leaf.unit) if leaf is not None else None
            if leaf is None or placed != inventory.host or self.engine.root.state.ended:
                self._actions.append(
                    SendOrder(
                        inventory.host,
                        Order(
                            self.pool,
                            self.generation,
                            self.me,
                            self.digest,
                            path,
                            "terminate",
                            leaf.unit if leaf else path,
                        ),
                    )
                )
        for leaf in self.leaves.values():
            if (
                self.placement.get(leaf.unit) == inventory.host
                and leaf.state == "running"
                and leaf.engine_op is None
                and leaf.unit not in self.replays
                and (
                    leaf.path not in inventory.leaves
                    or inventory.states.get(leaf.path, "running") == "deployed"
                )
            ):
                # Not listed, or listed as defined but not running: its VM died and the
                # death report was lost.
                self._leaf_lost(leaf, f"{inventory.host} no longer runs it")

    def _on_timer(self, name: str) -> None:
        engine_timer = self._engine_timers.pop(name, None)
        if engine_timer is not None:
            self._feed(lm.TimerFired(*engine_timer))
        elif name.startswith("away:"):
            gone = name[5:]
            ends = self.away.get(gone)
            if ends is not None and ends <= self._now and gone not in self.offers:
                del self.away[gone]  # not back in time: its units are lost, as if it died
                self.vouched.pop(gone, None)
                self._lose(gone)  # once its (leave's) lease surely ended
                self._save()
        elif name.startswith("retry:"):
            path, op = name[6:].rsplit(":", 1)
            leaf = self.leaves.get(path)
            chain = self.replays.get(leaf.unit) if leaf is not None else None
            if leaf is not None and (leaf.engine_op == op or (chain and chain[0] == (path, op))):
                host = self.placement.get(leaf.unit)
                if host is not None:
                    self._send(leaf, op, host)
