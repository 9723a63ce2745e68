"""The member table: records, the probe order, and random choices among members.

Kept apart from the protocol rules so those read as rules. Everything random goes through the
injected ``random.Random``, and nothing here iterates a ``set`` (whose order depends on string
hashing), so runs are reproducible from a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sdmesh.membership.member import Address, Member, Meta, State


@dataclass(slots=True)
class Record:
    """Our mutable view of one member.

    Change fields through ``MemberTable.set_state`` or follow in-place changes with
    ``MemberTable.changed``: both drop the cached snapshot.
    """

    name: str
    addr: Address
    incarnation: int
    state: State
    meta: Meta
    since: float
    """When ``state`` last changed (reaping, gossip to the recently dead)."""
    cached: Member | None = None
    proof: bytes = b""
    """The member's signed word for its latest alive or leave (host identities)."""

    def snapshot(self) -> Member:
        member = self.cached
        if member is None:
            member = Member(
                self.name, self.addr, self.incarnation, self.state, self.meta, self.proof
            )
            self.cached = member
        return member


class MemberTable:
    """All members we know, ourselves included (``self_name``), with indexes for probing."""

    def __init__(self, self_name: str, rng: random.Random) -> None:
        self.self_name = self_name
        self._rng = rng
        self._records: dict[str, Record] = {}
        self.live_count = 0
        """Alive or suspect members other than ourselves."""
        self._dead: dict[str, None] = {}
        self._left: dict[str, None] = {}
        self._recent_dead: dict[str, float] = {}
        """Death time by name, oldest first: candidates for gossip to the dead."""
        # SWIM's round-robin probe order (section 4.3): a shuffled list walked once per round,
        # which bounds the time until a given member is probed by everyone. It also serves as
        # the pool for random choices; entries that stopped being live linger until the next
        # shuffle and are skipped.
        self._order: list[str] = []
        self._in_order: set[str] = set()
        self._index = 0
        self._snapshot: tuple[Member, ...] | None = None

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> Record | None:
        return self._records.get(name)

    def records(self) -> list[Record]:
        return list(self._records.values())

    def add(self, record: Record) -> None:
        """Insert a member we did not know."""
        self._records[record.name] = record
        self._index_state(record, None)
        self._snapshot = None

    def add_many(self, records: list[Record]) -> None:
        """Insert many unknown members at once: one shuffle instead of random insertions
        (the current round restarts, which is harmless)."""
        for record in records:
            self._records[record.name] = record
            if not record.state.live:
                self._index_state(record, None)
            elif record.name != self.self_name:
                self.live_count += 1
                if record.name not in self._in_order:
                    self._order.append(record.name)
                    self._in_order.add(record.name)
        self._rng.shuffle(self._order)
        self._index = 0
        self._snapshot = None

    def remove(self, name: str) -> Record | None:
        """Forget a member (reaping). It may still sit in the probe order until the next
        shuffle; lookups skip it."""
        record = self._records.pop(name, None)
        if record is not None:
            if record.state.live and name != self.self_name:
                self.live_count -= 1
            self._dead.pop(name, None)
            self._left.pop(name, None)
            self._recent_dead.pop(name, None)
            self._snapshot = None
        return record

    def set_state(self, record: Record, state: State, now: float) -> State:
        """Move ``record`` to ``state``; returns the previous state."""
        old = record.state
        if old is not state:
            record.state = state
            record.since = now
            self._index_state(record, old)
        record.cached = None
        self._snapshot = None
        return old

    def changed(self, record: Record) -> None:
        """``record`` changed in place (incarnation, address, meta)."""
        record.cached = None
        self._snapshot = None

    def snapshot(self) -> tuple[Member, ...]:
        """All members, for push-pull; cached until something changes."""
        if self._snapshot is None:
            self._snapshot = tuple(record.snapshot() for record in self._records.values())
        return self._snapshot

    def dead_names(self) -> list[str]:
        return list(self._dead)

    def expired(self, now: float, dead_after: float, left_after: float) -> list[str]:
        """Dead or departed members whose memory may be dropped."""
        names = [n for n in self._dead if now - self._records[n].since >= dead_after]
        names += [n for n in self._left if now - self._records[n].since >= left_after]
        return names

    def next_probe_target(self) -> Record | None:
        """The next live member in round-robin order, reshuffling at the end of a round."""
        for _ in range(len(self._order) + 1):
            if self._index >= len(self._order):
                self._reshuffle()
                if not self._order:
                    return None
            name = self._order[self._index]
            self._index += 1
            record = self._records.get(name)
            if record is not None and record.state.live:
                return record
        return None

    def sample(self, count: int, *, alive_only: bool, exclude: str = "") -> list[Record]:
        """Up to ``count`` distinct random live members (only alive ones if ``alive_only``)."""
        pool = self._order
        chosen: list[Record] = []
        if count <= 0 or not pool:
            return chosen
        seen: set[str] = {exclude}
        size = len(pool)
        draw = self._rng.random
        for _ in range(4 * count + 16):
            name = pool[int(draw() * size)]
            if name in seen:
                continue
            seen.add(name)
            record = self._records.get(name)
            if record is not None and self._eligible(record, alive_only):
                chosen.append(record)
                if len(chosen) == count:
                    return chosen
        # Few eligible entries in a large pool: fall back to an exhaustive pass.
        rest = [
            record
            for name in pool
            if name not in seen
            and (record := self._records.get(name)) is not None
            and self._eligible(record, alive_only)
        ]
        chosen += self._rng.sample(rest, min(count - len(chosen), len(rest)))
        return chosen

    def gossip_targets(self, count: int, now: float, dead_window: float) -> list[Record]:
        """Random live members, plus members that died within ``dead_window``, chosen
        uniformly among both so a wrongly declared member hears about it and refutes."""
        while self._recent_dead:
            oldest = next(iter(self._recent_dead))
            if now - self._recent_dead[oldest] < dead_window:
                break
            del self._recent_dead[oldest]
        if not self._recent_dead:
            return self.sample(count, alive_only=False)
        dead = list(self._recent_dead)
        total = self.live_count + len(dead)
        draws = {self._rng.randrange(total) for _ in range(min(count, total))}
        dead_slots = sorted(slot for slot in draws if slot >= self.live_count)
        targets = self.sample(count - len(dead_slots), alive_only=False)
        for slot in dead_slots:
            record = self._records.get(dead[slot - self.live_count])
            if record is not None:
                targets.append(record)
        return targets

    def _eligible(self, record: Record, alive_only: bool) -> bool:
        if alive_only:
            return record.state is State.ALIVE
        return record.state.live

    def _index_state(self, record: Record, old: State | None) -> None:
        name = record.name
        new = record.state
        if name == self.self_name:
            return
        was_live = old is not None and old.live
        if was_live != new.live:
            self.live_count += 1 if new.live else -1
        if old is State.DEAD:
            self._dead.pop(name, None)
            self._recent_dead.pop(name, None)
        elif old is State.LEFT:
            self._left.pop(name, None)
        if new is State.DEAD:
            self._dead[name] = None
            self._recent_dead[name] = record.since
        elif new is State.LEFT:
            self._left[name] = None
        elif name not in self._in_order:
            # New members go to a random place in the current round (SWIM section 4.3), so
            # that they are probed soon by some and later by others.
            position = self._rng.randint(0, len(self._order))
            self._order.insert(position, name)
            self._in_order.add(name)
            if position < self._index:
                self._index += 1

    def _reshuffle(self) -> None:
        self._order = [
            name
            for name, record in self._records.items()
            if name != self.self_name and record.state.live
        ]
        self._rng.shuffle(self._order)
        self._in_order = set(self._order)
        self._index = 0
