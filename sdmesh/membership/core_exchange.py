"""The membership core's full-state exchanges: push-pull, joining, reconnecting.

A push-pull sends every member and as many rumors as the stream budget allows; the peer
merges it and replies with its own. Joining is a push-pull with the seeds (retried with
backoff while we know no one), periodic push-pulls repair what gossip missed, and dead
members are tried now and then so the halves of a healed partition find each other again.
"""

from __future__ import annotations

from sdmesh.membership.actions import JoinCompleted, JoinFailed, OpenStream, ReplyStream
from sdmesh.membership.config import push_pull_period
from sdmesh.membership.core_base import JOIN_RETRY, PUSH_PULL, RECONNECT, JoinAttempt, Phase
from sdmesh.membership.core_rules import StateRules
from sdmesh.membership.member import Address, State
from sdmesh.membership.messages import Alive, Dead, PushPull, Rumor, RumorUpdate, Suspect
from sdmesh.membership.rumors import age_since
from sdmesh.membership.wire import packed_size

RUMOR_LIST_OVERHEAD = 5
"""msgpack bytes of the rumor list header in a push-pull (at most an array32 header)."""
REGOSSIP_PER_MERGE = 16
"""Rumors new to us in one push-pull that we also gossip, newest first. A few are news our
side of a healed partition missed and gossip spreads them fastest; a flood of them (a node
back from a long absence) is for anti-entropy, not for the broadcast queue it would clog."""


class PushPullExchange(StateRules):
    """Push-pull anti-entropy, joins and reconnects."""

    # ------------------------------------------------------------------ join

    def _on_join(self, seeds: tuple[Address, ...], *, retry: bool = False) -> None:
        if not retry:
            self._join_seeds = seeds
            self._join_retry_delay = self.config.join_retry_initial
            self._disarm(JOIN_RETRY)
        targets = [addr for addr in dict.fromkeys(seeds) if addr != self._addr]
        self._join = JoinAttempt(pending=dict.fromkeys(targets))
        if not targets:
            self._join.done = True
            self._out.append(JoinFailed(tuple(seeds)))
            return
        for addr in targets:
            self._open_push_pull(addr, join=True)

    # ------------------------------------------------------------------ push-pull

    def _open_push_pull(self, addr: Address, *, join: bool) -> None:
        self._out.append(OpenStream(addr, self._push_pull(join=join, reply=False)))
        self.stats.streams_opened += 1

    def _push_pull(self, *, join: bool, reply: bool) -> PushPull:
        """Our full state: every member, and as many rumors as the stream budget leaves room
        for, newest first (the members take precedence: they are the protocol)."""
        members = self._table.snapshot()
        if not self._rumors:
            return PushPull(self._name, join, reply, members)
        if members is not self._sized_members:
            self._sized_members = members
            self._members_bytes = packed_size(PushPull(self._name, join, reply, members).to_wire())
        room = self.config.max_stream_bytes - self._members_bytes - RUMOR_LIST_OVERHEAD
        updates: list[RumorUpdate] = []
        for held in self._rumors.newest_first(self._now):
            room -= held.size
            if room < 0:
                break
            updates.append(RumorUpdate(held.rumor, age_since(held.published, self._now)))
        return PushPull(self._name, join, reply, members, tuple(updates))

    def _on_stream(self, src: Address, message: PushPull, stream_id: int) -> None:
        if not message.reply:
            self._merge(message)
            self._merge_rumors(message.rumors, spread=True)
            reply = self._push_pull(join=message.join, reply=True)
            self._out.append(ReplyStream(stream_id, reply))
            return
        incarnation = self._incarnation
        wrong_about_us = self._merge(message) or self._incarnation > incarnation
        # A join reply holds what the mesh already knows: nothing there is news to gossip.
        self._merge_rumors(message.rumors, spread=not message.join)
        join = self._join
        if message.join and join is not None and src in join.pending:
            del join.pending[src]
            if not join.done:
                join.done = True
                self._out.append(JoinCompleted(src, len(self._table)))
                # Members joining at the same moment (a rack booting) got the seed's state
                # before it knew of the others; one early anti-entropy round with that seed
                # (which has heard of them by then) brings them in at once, instead of one
                # gossip datagram at a time.
                delay = self._rng.uniform(0.5, 1.5) * self.config.join_sync_delay
                self._join_sync = src
                self._arm(PUSH_PULL, self._now + delay)
        if wrong_about_us and self._phase is Phase.RUNNING:
            # The peer held stale news about us (we restarted, possibly elsewhere, or it lost
            # sight of us during a partition): push once more so it sees the refutation now.
            self._open_push_pull(src, join=False)

    def _on_stream_failed(self, addr: Address) -> None:
        join = self._join
        if join is None or addr not in join.pending:
            return
        del join.pending[addr]
        join.failed.append(addr)
        if not join.pending and not join.done:
            join.done = True
            self._out.append(JoinFailed(tuple(join.failed)))
            self._schedule_join_retry()

    def _schedule_join_retry(self) -> None:
        """Serf's retry-join: hosts boot in any order, so a member whose seeds were all down
        tries them again, backing off, for as long as it knows no one else. Once anyone has
        reached us (a seed that came up, or a peer that knew our address), gossip takes over."""
        if self._phase is not Phase.RUNNING or not self._join_seeds or self.live_count > 1:
            return
        delay = self._join_retry_delay * self._rng.uniform(0.8, 1.2)
        self._join_retry_delay = min(self._join_retry_delay * 2, self.config.join_retry_max)
        self._arm(JOIN_RETRY, self._now + delay)

    def _on_join_retry(self) -> None:
        if self._phase is Phase.RUNNING and self.live_count <= 1:
            self._on_join(self._join_seeds, retry=True)

    def _merge(self, message: PushPull) -> bool:
        """Merge a remote full state; True if the peer holds us for anything but alive.

        A remote *dead* verdict only makes us suspect the member (memberlist's rule): it lets
        the member refute before we believe it.
        """
        wrong_about_us = False
        for member in message.members:
            if member.name == self._name:
                wrong_about_us = member.state is not State.ALIVE
            record = self._table.get(member.name)
            if (
                record is not None
                and record.incarnation == member.incarnation
                and record.state is member.state
                and member.name != self._name
            ):
                continue
            if member.state is State.ALIVE:
                self._on_alive(
                    Alive(member.name, member.incarnation, member.addr, member.meta, member.proof)
                )
            elif member.state is State.LEFT:
                self._on_dead(
                    Dead(member.name, member.incarnation, member.name, True, member.proof)
                )
            else:
                self._on_suspect(Suspect(member.name, member.incarnation, message.sender))
        return wrong_about_us

    def _merge_rumors(self, updates: tuple[RumorUpdate, ...], *, spread: bool) -> None:
        learned: list[tuple[Rumor, float]] = []
        for update in updates:
            published = self._now - update.age
            if self._learn(update.rumor, published):
                learned.append((update.rumor, published))
        if spread:
            learned.sort(key=lambda pair: pair[0].rank, reverse=True)
            for rumor, published in learned[:REGOSSIP_PER_MERGE]:
                self._spread(rumor, published)

    def _on_push_pull_timer(self) -> None:
        period = push_pull_period(self.config.push_pull_interval, self.live_count)
        self._arm(PUSH_PULL, self._now + period)
        sync, self._join_sync = self._join_sync, None
        if sync is not None:
            self._open_push_pull(sync, join=False)
            return
        peers = self._table.sample(1, alive_only=True)
        if peers:
            self._open_push_pull(peers[0].addr, join=False)

    def _on_reconnect_timer(self) -> None:
        """Serf's reconnect: after a partition both sides hold each other dead and stop
        talking; one push-pull across makes each side learn and refute the other's verdict.

        Each member tries with probability dead/live, so a mesh that lost a few hosts makes
        about one attempt per interval and per dead host overall, while the two halves of a
        split mesh (or an isolated host) try every interval.
        """
        self._arm(RECONNECT, self._now + self.config.reconnect_interval)
        dead = self._table.dead_names()
        if not dead or self._rng.random() >= len(dead) / self.live_count:
            return
        record = self._table.get(dead[self._rng.randrange(len(dead))])
        if record is not None:
            self._open_push_pull(record.addr, join=False)
