"""Records and rumors proven by their writer (issue 12, item 2): with host identities, what
this agent writes to the DHT and publishes about pools carries its proof, and what it reads
is taken only from a writer entitled to write it (sdmesh.pools.record_seal). Refusals are
counted (``record``, ``rumor``, ``tombstone``). Without identities this changes nothing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from sdmesh.agent.pools.common import TOPIC_POOL, TOPIC_TOMB, KnownPool
from sdmesh.agent.pools.view import MembershipView
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.records import LIVE_STATES, PoolRecord, RecordFormatError
from sdmesh.trust.identity import SIGNATURE_BYTES

log = logging.getLogger(__name__)

#: Rumors kept aside until their writer is known (a joiner hears rumors and members in no
#: particular order); the oldest kept is dropped beyond this.
MAX_PARKED: Final = 1024
#: Rumors whose proof was checked for the membership core, remembered (with the writer's
#: certificate) so the copies gossip repeats cost a look-up; forgotten all at once beyond this.
MAX_ADMITTED: Final = 4096
#: Seconds a refusal is remembered: a writer's certificate may be renewed late, or a rumor
#: heard before a revocation list caught up; its copies meanwhile cost a look-up.
ADMIT_REFUSAL_TTL: Final = 60.0
#: Pools known only from rumors of writers unknown here, kept as takeover hints.
MAX_HINTS: Final = 256


@dataclass(frozen=True)
class _Verdict:
    """A remembered verdict of ``admit_rumor``: whether admitted, until when a refusal holds
    (monotonic), and the writer (whose certificate is part of the key)."""

    admitted: bool
    until: float
    writer: str


class RecordSeals(MembershipView):
    """Seals what this agent writes, checks what it reads."""

    def sealed_record(self, record: PoolRecord) -> PoolRecord:
        """``record`` as this agent stores it: with its name and proof (identities on)."""
        prove = self.prove
        return record if prove is None else seal.seal_record(record, self.name, prove)

    def record_taken(self, record: PoolRecord) -> bool:
        """Whether a record read from the DHT may be used: always without identities; with
        them, only with a valid proof from a writer entitled to write it (else counted)."""
        check = self.check_signed
        if check is None:
            return True
        refusal = seal.record_refusal(
            record,
            self._members(),
            check,
            self.host.shepherd_of(record.pool),
            self.envelope_check,
            now=self.wall_clock(),
        )
        if refusal is None:
            return True
        self.refusals.refuse(authz.RECORD, refusal)
        return False

    def record_kept(self, record: PoolRecord) -> bool:
        """The DHT admission with identities (what replicas keep, and every copy a lookup
        reads: sdmesh.pools.record_admission): ``record_taken``, and never a submission
        record by another member in place of the live record of a pool's shepherd held here.
        A genuine submission follows an ended record or none (operations.submit checks); one
        above a live record replays a public envelope, and would leave the next shepherd with
        nothing placed (every VM rebuilt). Refusals counted (``record``)."""
        if not self.record_taken(record):
            return False
        if self.check_signed is None or not seal.is_foreign_submission(record):
            return True
        held = self._held_record(record.pool)
        if (
            held is None
            or held.generation >= record.generation
            or held.state not in LIVE_STATES
            or seal.is_foreign_submission(held)
        ):
            return True
        self.refusals.refuse(
            authz.RECORD,
            f"pool {record.pool}: a submission record by {record.writer} above the live "
            f"record of its shepherd {held.shepherd}",
        )
        return False

    def _held_record(self, pool: str) -> PoolRecord | None:
        """The pool's record as this node's DHT share holds it (one-part values only)."""
        found = self.dht.local_record(f"pool/{pool}")
        if found is None or found.value[:1] != b"\x00":
            return None
        try:
            return PoolRecord.decode(found.value[1:])
        except RecordFormatError:
            return None

    def wall_clock(self) -> float:
        """Unix seconds: a submission record's envelope is judged against it."""
        return time.time()

    def reseal_records(self) -> None:
        """With identities: store the record of every live pool shepherded here again (through
        its flush, after whatever it has queued), sealed with this host's current certificate.
        A record is otherwise written only when its pool changes, and one that ran unchanged
        past its writer's certificate (renewed since) could not be taken over from: a proof
        under an expired certificate does not verify. Called every ``ANNOUNCE_PERIOD``."""
        if self.prove is None:
            return
        for pool, run in list(self.shepherding.items()):
            if run.core.paused or run.core.announcement() is None or run.save is not None:
                continue
            run.save = run.core.record()
            if run.flushing is None or run.flushing.done():
                run.flushing = self._spawn(self._flush(pool, run))

    def certificate_renewed(self) -> None:
        """This host's certificate changed (SIGHUP): its records and its pools' rumors are
        sealed and published again under the new one, so none of them is refused as a
        forgery until the next ``ANNOUNCE_PERIOD``."""
        self.reseal_records()
        self.announce()

    def sealed_rumor(self, topic: str, pool: str, body: dict[str, object]) -> dict[str, object]:
        """A pool or tombstone rumor's body with this agent's name and proof (identities on)."""
        prove = self.prove
        return body if prove is None else seal.seal_rumor(topic, pool, body, self.name, prove)

    def rumor_refused(self, rumor: Any, body: dict[str, Any]) -> bool:
        """Whether a pool or tombstone rumor lacks its writer's valid proof, or a pool rumor
        in any state but deploying comes from another member than its entitled shepherd
        (identities on); counted as ``tombstone`` or ``rumor``. One from a writer this host
        knows no certificate of yet is kept aside (the newest per topic and key, at most
        ``MAX_PARKED``) and heard again when the membership changes (``retry_parked``)."""
        check = self.check_signed
        if check is None:
            return False
        topic, key = rumor.topic, rumor.key
        self._parked.pop((topic, key), None)  # a newer rumor supersedes the one kept aside
        refusal = seal.rumor_refusal(topic, key, body, check, self._certificate_of, rumor.origin)
        if refusal is None and topic == TOPIC_POOL:
            wrong = seal.pool_rumor_refusal(key, body, self._members(), self.host.shepherd_of(key))
            refusal = ("refused", wrong) if wrong is not None else None
        if refusal is None:
            return False
        verdict, message = refusal
        if verdict == seal.UNKNOWN_WRITER and self._operator_ended(topic, key, body):
            return False
        if verdict == seal.UNKNOWN_WRITER:
            if len(self._parked) >= MAX_PARKED:
                self._parked.pop(next(iter(self._parked)))
            self._parked[(topic, key)] = rumor
            log.debug("%s: heard again once its writer is known", message)
            return True
        reason = authz.TOMBSTONE if topic == TOPIC_TOMB else authz.RUMOR
        self.refusals.refuse(reason, message)
        return True

    def lifts_tombstone(self, pool: str, body: dict[str, Any]) -> bool:
        """Whether a pool rumor newer than ``pool``'s tombstone may lift it: any without
        identities; with them, only its entitled shepherd's (sdmesh.pools.record_seal.
        from_shepherd), which announces a resubmitted pool when it starts shepherding it."""
        if self.check_signed is None:
            return True
        return seal.from_shepherd(pool, body, self._members(), self.host.shepherd_of(pool))

    def admit_rumor(self, rumor: Any) -> bool:
        """The membership core's check of a pool or tombstone rumor before it stores or
        forwards it (identities on; ``IdentityChecker.rumor_checks``): refused unless it
        carries its writer's valid proof and was published by its writer, so a forged rumor
        never displaces a genuine one in any member's store. A writer not known yet is
        refused quietly (push-pull offers the rumor again), and a pool rumor of one is kept
        as a hint (``_hint``); forgeries are counted once per distinct rumor (gossip repeats
        them). The proof only: who may say what about a pool depends on each host's view,
        and is ``rumor_refused``'s to judge (a view must not keep a rumor from spreading).

        Verdicts are remembered per rumor *and* the writer's current certificate, so a
        renewed or re-enrolled writer is checked again at once, and a revoked one (its claims
        drop their certificate) is never admitted from memory; refusals are forgotten after
        ``ADMIT_REFUSAL_TTL`` all the same (``forget_stale_admissions``)."""
        check = self.check_signed
        if check is None:
            return True
        try:
            body = msgpack.unpackb(rumor.payload, raw=False)
        except Exception:  # msgpack raises several unrelated types
            body = None
        writer = body.get(seal.WRITER_FIELD) if isinstance(body, dict) else None
        writer = writer if isinstance(writer, str) else ""
        certificate = (self._certificate_of(writer) if writer else None) or b""
        seen = (rumor.topic, rumor.key, rumor.payload, rumor.origin, certificate)
        now = time.monotonic()
        remembered = self._admitted.get(seen)
        if remembered is not None and (remembered.admitted or remembered.until > now):
            return bool(remembered.admitted)
        refusal = (
            seal.rumor_refusal(
                rumor.topic, rumor.key, body, check, self._certificate_of, rumor.origin
            )
            if isinstance(body, dict)
            else ("refused", f"a malformed {rumor.topic} rumor about a pool")
        )
        if refusal is not None and refusal[0] == seal.UNKNOWN_WRITER:
            if isinstance(body, dict) and self._operator_ended(rumor.topic, rumor.key, body):
                return True  # the operator's signature is what ends a pool
            if rumor.topic == TOPIC_POOL and isinstance(body, dict):
                self._hint(rumor.key, body)
            return False  # not remembered: admitted once its writer is known
        if len(self._admitted) >= MAX_ADMITTED:
            self._admitted.clear()
        self._admitted[seen] = _Verdict(refusal is None, now + ADMIT_REFUSAL_TTL, writer)
        if refusal is not None:
            reason = authz.TOMBSTONE if rumor.topic == TOPIC_TOMB else authz.RUMOR
            self.refusals.refuse(reason, refusal[1])
        return refusal is None

    def _operator_ended(self, topic: str, pool: str, body: dict[str, Any]) -> bool:
        """Whether a tombstone from a writer this host knows no certificate of (dead before
        this agent saw it alive) carries an operator's valid termination signature: that,
        not the writer, is what ends a pool, and a host that dropped it could take the
        terminated pool over again from its last record."""
        check = self.termination_check
        if topic != TOPIC_TOMB or check is None:
            return False
        generation = body.get("gen")
        if not isinstance(generation, int) or isinstance(generation, bool):
            return False
        if generation < self.newest_generation(pool):
            return False  # an old termination replayed: it must not displace a newer one
        return check(body.get("sig", b""), pool, generation) is None

    def forget_stale_admissions(self) -> None:
        """Forget the verdicts remembered under a certificate that is no longer its writer's
        (renewed, re-enrolled, revoked: a revoked member's claims lose theirs), and refusals
        past ``ADMIT_REFUSAL_TTL``. Called on membership changes."""
        now = time.monotonic()
        for seen, verdict in list(self._admitted.items()):
            current = (self._certificate_of(verdict.writer) if verdict.writer else None) or b""
            if current != seen[4] or (not verdict.admitted and verdict.until <= now):
                del self._admitted[seen]

    def _hint(self, pool: str, body: dict[str, Any]) -> None:
        """A pool rumor from a writer this host knows no certificate of (a shepherd that died
        before this agent saw it alive: push-pull carries no proof for dead members, so it
        never will): not taken as what this host knows of the pool, but kept (at most
        ``MAX_HINTS``) so the pool's successor tries a takeover (``_apply_view``), which
        reads and fully checks the pool's record; a hint with no record behind it is dropped
        (``_take_over``)."""
        from sdmesh.pools.generations import is_generation
        from sdmesh.pools.records import LIVE_STATES

        generation, state = body.get("generation"), body.get("state")
        if not is_generation(generation) or state not in LIVE_STATES or pool in self.known:
            return
        assert isinstance(generation, int)
        held = self._hints.get(pool)
        if held is not None and held.generation >= generation:
            return
        if held is None and len(self._hints) >= MAX_HINTS:
            self._hints.pop(next(iter(self._hints)))
        self._hints[pool] = KnownPool(
            str(body.get("digest", "")),
            str(state),
            str(body.get("shepherd", "")),
            time.monotonic(),
            generation,
        )
        if self._periodic is not None:  # started (else start() looks at the view)
            self._view_changed()

    def retry_parked(self) -> None:
        """Hear again the rumors kept aside whose writer is now known."""
        for (topic, key), rumor in list(self._parked.items()):
            if self._parked.get((topic, key)) is not rumor:
                continue
            writer = _writer_of(rumor)
            if writer and self._certificate_of(writer):
                del self._parked[(topic, key)]
                self._on_rumor(rumor)

    def _members(self) -> set[str]:
        """The members a writer is ranked among: live, and counted as live (lost too recently
        to act on), as for orders (sdmesh.agent.pools.authz)."""
        members = {m.name for m in self.node.core.live_members()}
        return members | {m.name for m in self.counted_members()}

    def _certificate_of(self, name: str) -> bytes | None:
        """The certificate in member ``name``'s verified membership claim (its proof is the
        signature, then the certificate), or None for a member unknown here."""
        member = self.node.core.member(name)
        proof = member.proof if member is not None else b""
        return proof[SIGNATURE_BYTES:] if len(proof) > SIGNATURE_BYTES else None


def _writer_of(rumor: Any) -> str:
    try:
        body = msgpack.unpackb(rumor.payload, raw=False)
    except Exception:  # msgpack raises several unrelated types
        return ""
    writer = body.get(seal.WRITER_FIELD) if isinstance(body, dict) else None
    return writer if isinstance(writer, str) else ""
