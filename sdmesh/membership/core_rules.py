"""The membership core's merge rules: how alive, suspect and dead news change the table.

SWIM's suspicion mechanism with incarnations: a higher incarnation is the member's own word,
a suspicion starts a Lifeguard timeout that shrinks with independent confirmations, a claim
about ourselves is refuted with a raised incarnation (and answered directly when the sender
missed an earlier refutation). Rumors (application records under a Lamport clock) are
learned, published and spread here too, revocations among them.
"""

from __future__ import annotations

from sdmesh.membership.actions import MemberEventKind, RumorLearned
from sdmesh.membership.config import suspicion_bounds
from sdmesh.membership.core_base import SUSPICION_PREFIX, Phase
from sdmesh.membership.core_identity import IdentityChecks
from sdmesh.membership.events import Publish, Revoke
from sdmesh.membership.member import Address, State
from sdmesh.membership.messages import Alive, Dead, Rumor, RumorUpdate, Suspect, checked_rumor
from sdmesh.membership.rumors import age_since
from sdmesh.membership.suspicion import Suspicion
from sdmesh.membership.table import Record
from sdmesh.membership.wire import MAX_UINT64, MalformedMessage, packed_size

#: How far above our Lamport clock a rumor may be: every publication moves the mesh's clock by
#: one, so no mesh gets near this honestly, while a key holder's rumor at 2**64-1 would leave
#: every member's clock exhausted (no publication again: pool states, tombstones,
#: revocations). Refused rumors are counted (``Stats.rumors_refused``).
MAX_LTIME_STEP = 2**32


class StateRules(IdentityChecks):
    """Alive, suspect and dead rules, refutation, and rumors."""

    # ------------------------------------------------------------------ state rules

    def _on_alive(self, message: Alive) -> None:
        if message.name == self._name:
            self._alive_about_me(message)
            return
        record = self._table.get(message.name)
        if (record is None or message.incarnation > record.incarnation) and not self._signed(
            message
        ):
            return
        if record is None:
            record = Record(
                message.name,
                message.addr,
                message.incarnation,
                State.ALIVE,
                message.meta,
                self._now,
                proof=message.proof,
            )
            self._table.add(record)
            self._emit(MemberEventKind.JOINED, record, None)
            self._queue.enqueue(message.name, message)
            return
        if message.incarnation <= record.incarnation:
            return
        # A higher incarnation is the member's own word: accept a new address too (restart).
        changed = record.addr != message.addr or record.meta != message.meta
        record.incarnation = message.incarnation
        record.addr = message.addr
        record.meta = message.meta
        record.proof = message.proof
        old = self._transition(record, State.ALIVE)
        if old is State.SUSPECT:
            self._emit(MemberEventKind.RECOVERED, record, old)
        elif old is not State.ALIVE:
            self._emit(MemberEventKind.JOINED, record, old)
        elif changed:
            self._emit(MemberEventKind.UPDATED, record, old)
        self._queue.enqueue(message.name, message)

    def _on_suspect(self, message: Suspect, src: Address | None = None) -> None:
        if message.name == self._name:
            self._claim_about_me(message.incarnation, src)
            return
        record = self._table.get(message.name)
        if record is None or not record.state.live or message.incarnation < record.incarnation:
            return
        if self.identity is not None and message.incarnation > record.incarnation:
            message = Suspect(message.name, record.incarnation, message.sender)  # see _vetted_dead
        if record.state is State.SUSPECT and message.incarnation == record.incarnation:
            suspicion = self._suspicions.get(message.name)
            if suspicion is not None and suspicion.confirm(message.sender):
                self.stats.confirmations += 1
                self._arm(SUSPICION_PREFIX + message.name, max(self._now, suspicion.deadline))
                self._queue.enqueue(message.name, message)
            return
        # A new suspicion: of an alive member, or of one that refuted an earlier suspicion and
        # is suspected again (its clock restarts: the old one was answered).
        record.incarnation = message.incarnation
        old = self._transition(record, State.SUSPECT)
        members = self.live_count
        expected = self.config.suspicion_confirmations
        if members - 2 < expected:
            expected = 0  # too few members for that many independent confirmations
        low, high = suspicion_bounds(self.config, members)
        suspicion = Suspicion(self._now, low, high, expected, message.sender)
        self._suspicions[message.name] = suspicion
        self._arm(SUSPICION_PREFIX + message.name, suspicion.deadline)
        if old is State.ALIVE:
            self._emit(MemberEventKind.SUSPECTED, record, old)
        self._queue.enqueue(message.name, message)

    def _on_suspicion_timeout(self, name: str) -> None:
        record = self._table.get(name)
        suspicion = self._suspicions.get(name)
        if record is None or suspicion is None or record.state is not State.SUSPECT:
            return
        if self._now < suspicion.deadline:
            self._arm(SUSPICION_PREFIX + name, suspicion.deadline)
            return
        self.stats.deaths_declared += 1
        self._on_dead(Dead(name, record.incarnation, self._name))

    def _on_dead(self, message: Dead, src: Address | None = None) -> None:
        if message.name == self._name:
            self._claim_about_me(message.incarnation, src)
            return
        record = self._table.get(message.name)
        if record is None or message.incarnation < record.incarnation:
            return
        if record.state is State.LEFT or (record.state is State.DEAD and not message.left):
            return
        if self.identity is not None:
            vetted = self._vetted_dead(message, record)
            if vetted is None:
                return
            message = vetted
        if message.left:
            record.proof = message.proof
        record.incarnation = message.incarnation
        new = State.LEFT if message.left else State.DEAD
        old = self._transition(record, new)
        kind = MemberEventKind.LEFT if message.left else MemberEventKind.FAILED
        self._emit(kind, record, old)
        self._queue.enqueue(message.name, message)

    def _alive_about_me(self, message: Alive) -> None:
        """Someone vouches for us: fine if it matches what we say, otherwise it is stale news
        (say, from before a restart) that must be overridden with a higher incarnation."""
        if message.incarnation < self._incarnation:
            return
        if (
            message.incarnation == self._incarnation
            and message.addr == self._addr
            and message.meta == self._meta
        ):
            return
        self._refute(message.incarnation)

    def _claim_about_me(self, incarnation: int, src: Address | None) -> None:
        """Someone says we are suspect, dead or gone. If that is news, refute it. If we already
        refuted it, ``src`` is still spreading the stale claim, which means it missed our
        refutation: tell it directly rather than hope the epidemic reaches it in time."""
        if self._phase is not Phase.RUNNING:
            return
        if self.identity is not None:  # see _vetted_dead: only we raise our incarnation
            incarnation = min(incarnation, self._incarnation)
        if incarnation >= self._incarnation:
            self._refute(incarnation)
        elif src is not None:
            self._send(src, [self._alive_message()])

    def _refute(self, incarnation: int) -> None:
        """Override a claim about us by announcing ourselves alive with a higher incarnation.

        Being suspected hints that we are the slow one, so local health worsens too.
        """
        if self._phase is not Phase.RUNNING:
            return
        self._incarnation = max(self._incarnation, incarnation) + 1
        me = self._self_record()
        me.incarnation = self._incarnation
        me.proof = self._own_proof()
        self._table.changed(me)
        self._queue.enqueue(self._name, self._alive_message())
        self._health.apply(1)
        self.stats.refutations += 1

    # ------------------------------------------------------------------ rumors

    def _checked_publish(self, event: Publish) -> Rumor:
        """The rumor ``event`` publishes, or ``ValueError`` if peers would refuse it or it
        would not fit a datagram next to a probe."""
        if self._rumors.clock >= MAX_UINT64:
            raise ValueError("rumor clock exhausted (a peer sent the largest Lamport time)")
        rumor = checked_rumor(
            event.topic, event.key, self._rumors.clock + 1, self._name, event.payload
        )
        size = packed_size(RumorUpdate(rumor, 0).to_wire())
        if size > self._update_room:
            raise MalformedMessage(
                f"rumor of {size} bytes does not fit a {self._update_room}-byte datagram budget"
            )
        return rumor

    def _on_publish(self, rumor: Rumor) -> None:
        """Store and gossip our own rumor; its Lamport time beats every value seen so far.

        A core that has not joined yet may not have seen the mesh's newer values for the key,
        so its publication can lose: publish after ``JoinCompleted`` to be sure.
        """
        self.stats.rumors_published += 1
        self._learn(rumor, self._now)
        self._spread(rumor, self._now)

    def _learn(self, rumor: Rumor, published: float) -> bool:
        """Offer ``rumor`` to the map; report it if taken."""
        if rumor.ltime > self._rumors.clock + MAX_LTIME_STEP:
            self.stats.rumors_refused += 1
            return False
        if self.identity is not None and not self.identity.admit_rumor(rumor):
            return False
        if not self._rumors.offer(rumor, published, self._now):
            return False
        self.stats.rumors_learned += 1
        self._out.append(RumorLearned(rumor))
        self._expel_revoked()
        return True

    def _spread(self, rumor: Rumor, published: float) -> None:
        """Queue ``rumor`` for gossip, unless it is too big for our datagrams (a peer with a
        larger budget sent it; push-pull still carries it)."""
        update = RumorUpdate(rumor, age_since(published, self._now))
        if packed_size(update.to_wire()) <= self._update_room:
            self._queue.enqueue((rumor.topic, rumor.key), update)

    def _on_revoke(self, event: Revoke) -> None:
        identity = self.identity
        if identity is None or not identity.revoke(event.revocation):
            self._expel_revoked()
            return
        topic, key, payload = identity.revocation_rumor(event.revocation)
        rumor = checked_rumor(topic, key, self._rumors.clock + 1, self._name, payload)
        self._learn(rumor, self._now)
        self._spread(rumor, self._now)
        self._expel_revoked()
