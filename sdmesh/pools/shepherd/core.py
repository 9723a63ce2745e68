"""The shepherd core's interface: ``Shepherd.handle`` takes one event and returns the
actions; the pause and the hand-over are decided here, everything else is dispatched to the
parts (see the package docstring for the whole picture)."""

from __future__ import annotations

from collections.abc import Mapping

from sdmesh.lifecycle import model as lm
from sdmesh.pools.shepherd.actions import Action, HandOff, SaveRecord, SendOrder, SetTimer
from sdmesh.pools.shepherd.answers import OrderBookkeeping
from sdmesh.pools.shepherd.events import (
    Answered,
    Begin,
    Event,
    HandOver,
    HostReclaimed,
    Inventory,
    MembersChanged,
    Pause,
    Reported,
    Resume,
    TerminateRequested,
    TimerFired,
)


class Shepherd(OrderBookkeeping):
    """The core of one pool at its shepherd."""

    def handle(self, event: Event, now: float) -> list[Action]:
        self._now = now
        self._actions = []
        if self.handed_to is not None or self.superseded is not None:
            return []
        if isinstance(event, HandOver):
            self.handed_to = event.successor
            return [SaveRecord(self.record()), HandOff(event.successor, self.record())]
        if isinstance(event, Pause):
            self.paused = True
            return []
        if isinstance(event, Resume):
            if self.paused:
                self._resume()
        elif self.paused:
            if isinstance(event, MembersChanged):  # only the latest view matters
                self._deferred = [e for e in self._deferred if not isinstance(e, MembersChanged)]
            if not isinstance(event, Inventory):  # periodic: the next one is fresher
                self._deferred.append(event)
            return []
        else:
            self._dispatch(event)
        if self.superseded is None:
            self._settle()
        actions, self._actions = self._actions, []
        return actions

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Begin):
            self._begin(event.vouched)
        elif isinstance(event, Answered):
            self._on_answer(event)
        elif isinstance(event, Reported):
            self._on_report(event.report)
        elif isinstance(event, MembersChanged):
            self._on_members(event.offers, event.away)
        elif isinstance(event, Inventory):
            self._on_inventory(event)
        elif isinstance(event, TerminateRequested):
            if not self.engine.root.state.ended:
                self._set_pool("terminating", event.reason)
                self._feed(lm.TerminateApplication(lm.TerminationRecord.normal_end(event.reason)))
        elif isinstance(event, TimerFired):
            self._on_timer(event.name)
        elif isinstance(event, HostReclaimed):
            self._on_reclaimed(event.host)

    def _resume(self) -> None:
        """Replay what waited (the latest view first), then resend what the pause may have
        kept from the hosts (they answer at once for what they already did) and save."""
        self.paused = False
        waiting, self._deferred = self._deferred, []
        waiting.sort(key=lambda e: not isinstance(e, MembersChanged))
        for event in waiting:
            self._dispatch(event)
        sent = {
            (a.host, a.order.path, a.order.op) for a in self._actions if isinstance(a, SendOrder)
        }
        before = len(self._actions)
        self._resend_all()
        self._actions[before:] = [
            a
            for a in self._actions[before:]
            if not (isinstance(a, SendOrder) and (a.host, a.order.path, a.order.op) in sent)
        ]
        self._save()

    # ========================================================================= begin
    def _begin(self, vouched: Mapping[str, Mapping[str, str]]) -> None:
        self.begun = True
        for host, ends in list(self.away.items()):  # from the record: the grace goes on
            if host in self.offers:
                del self.away[host]
                self.vouched.pop(host, None)
            elif ends <= self._now:
                del self.away[host]  # it ran out: its units are lost, moved once reclaimed
                self.vouched.pop(host, None)
            else:
                self._actions.append(SetTimer(f"away:{host}", ends))
        for host, leaves in vouched.items():
            self.vouched[host] = dict(leaves)  # the host's own word beats anyone's memory
            if host not in self.offers and host not in self.away:
                self._host_away(host)
        if self.state != "terminating":
            self._place_all()
        self._save()
        self._set_pool(self.state if self.state in ("terminating",) else "deploying")
        if self.state == "terminating":
            # A predecessor was terminating it and how far it got is unknown. Replaying the
            # deploy only to undo it would re-create what it already removed, and miss what
            # the replay had not reached yet: release every leaf still placed on a live host
            # instead (a host answers at once for what it no longer has), and end.
            self._release_everything()
            self._feed(lm.TerminateApplication(lm.TerminationRecord.normal_end(self.reason)))
        else:
            self._feed(lm.StartApplication())
