"""A hand-cranked driver for one membership core: feed events, inspect what comes out."""

from __future__ import annotations

import random
from collections.abc import Iterable

from sdmesh.membership import (
    Action,
    Address,
    CancelTimer,
    Compound,
    Event,
    Member,
    MemberEvent,
    Membership,
    MembershipConfig,
    Meta,
    PacketMessage,
    Preload,
    Received,
    Send,
    SetTimer,
    Start,
    TimerFired,
)
from sdmesh.membership.messages import SimpleMessage


def addr_of(name: str) -> Address:
    """Stable made-up address per node name."""
    return (f"10.0.0.{sum(name.encode()) % 250 + 1}", 7000 + len(name))


def member(name: str, incarnation: int = 0, meta: Meta | None = None) -> Member:
    return Member(name, addr_of(name), incarnation, meta=meta or {})


def flatten(message: PacketMessage) -> list[SimpleMessage]:
    return list(message.messages) if isinstance(message, Compound) else [message]


class Harness:
    """One core, its clock and its armed timers."""

    def __init__(
        self,
        name: str = "me",
        peers: Iterable[str] = (),
        *,
        config: MembershipConfig | None = None,
        seed: int = 0,
        incarnation: int = 0,
        meta: Meta | None = None,
    ) -> None:
        self.config = config or MembershipConfig(randomize_probe_phase=False)
        self.core = Membership(self.config, member(name, incarnation, meta), random.Random(seed))
        self.name = name
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.log: list[Action] = []
        peers = list(peers)
        if peers:
            self.feed(Preload(tuple(member(peer) for peer in peers)))
        self.feed(Start())

    def feed(self, event: Event, at: float | None = None) -> list[Action]:
        if at is not None:
            self.now = at
        actions = self.core.handle(event, self.now)
        for action in actions:
            if isinstance(action, SetTimer):
                self.timers[action.name] = action.at
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.name, None)
        self.log.extend(actions)
        return actions

    def fire(self, name: str) -> list[Action]:
        """Advance the clock to timer ``name`` and fire it."""
        at = self.timers.pop(name)
        return self.feed(TimerFired(name), at=max(at, self.now))

    def receive(self, sender: str, *messages: SimpleMessage) -> list[Action]:
        message: PacketMessage = messages[0] if len(messages) == 1 else Compound(messages)
        return self.feed(Received(addr_of(sender), message))

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sends(actions: Iterable[Action]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def sent_parts(actions: Iterable[Action], to: str | None = None) -> list[SimpleMessage]:
    """Every message part sent (optionally only to ``to``), compounds flattened."""
    return [
        part
        for send in sends(actions)
        if to is None or send.addr == addr_of(to)
        for part in flatten(send.message)
    ]


def member_events(actions: Iterable[Action]) -> list[MemberEvent]:
    return [action for action in actions if isinstance(action, MemberEvent)]


def timer_at(actions: Iterable[Action], name: str) -> float | None:
    found = None
    for action in actions:
        if isinstance(action, SetTimer) and action.name == name:
            found = action.at
    return found
