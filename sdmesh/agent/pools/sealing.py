"""Records and rumors proven by their writer (issue 12, item 2): with host identities, what
this agent writes to the DHT and publishes about pools carries its proof, and what it reads
is taken only from a writer entitled to write it (sdmesh.pools.record_seal). Refusals are
counted (``record``, ``rumor``, ``tombstone``). Without identities this changes nothing."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import msgpack

from sdmesh.agent.pools.common import TOPIC_POOL, TOPIC_TOMB
from sdmesh.agent.pools.view import MembershipView
from sdmesh.pools import authz
from sdmesh.pools import record_seal as seal
from sdmesh.pools.records import PoolRecord
from sdmesh.trust.identity import SIGNATURE_BYTES

log = logging.getLogger(__name__)

#: Rumors kept aside until their writer is known (a joiner hears rumors and members in no
#: particular order); the oldest kept is dropped beyond this.
MAX_PARKED: Final = 1024
#: Rumors (topic, key, payload) whose proof was checked for the membership core, remembered
#: so the copies gossip repeats cost a look-up; forgotten all at once beyond this.
MAX_ADMITTED: Final = 4096


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
        carries its writer's valid proof, so a forged rumor never displaces a genuine one in
        any member's store. A writer not known yet is refused quietly (push-pull offers the
        rumor again); forgeries are counted once per distinct rumor (gossip repeats them).
        The proof only: who may say what about a pool depends on each host's view, and is
        ``rumor_refused``'s to judge (a view must not keep a rumor from spreading)."""
        check = self.check_signed
        if check is None:
            return True
        seen = (rumor.topic, rumor.key, rumor.payload)
        verdict = self._admitted.get(seen)
        if verdict is not None:
            return verdict
        try:
            body = msgpack.unpackb(rumor.payload, raw=False)
        except Exception:  # msgpack raises several unrelated types
            body = None
        refusal = (
            seal.rumor_refusal(
                rumor.topic, rumor.key, body, check, self._certificate_of, rumor.origin
            )
            if isinstance(body, dict)
            else ("refused", f"a malformed {rumor.topic} rumor about a pool")
        )
        if refusal is not None and refusal[0] == seal.UNKNOWN_WRITER:
            return False  # not remembered: admitted once its writer is known
        if len(self._admitted) >= MAX_ADMITTED:
            self._admitted.clear()
        self._admitted[seen] = refusal is None
        if refusal is not None:
            reason = authz.TOMBSTONE if rumor.topic == TOPIC_TOMB else authz.RUMOR
            self.refusals.refuse(reason, refusal[1])
        return refusal is None

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
