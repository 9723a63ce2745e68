"""Who may write a pool's record or gossip about it (issue 12, item 2): what a writer signs,
and the pure rule a reader applies. Sans-IO: the signing and the checking of proofs are the
host identity's (sdmesh.membership.identity: ``prove`` and ``check_signed``), passed in.

With host identities, every record a host stores in the DHT and every pool or tombstone
rumor it publishes names its ``writer`` and carries a *proof*: the writer's Ed25519 signature
over canonical, domain-separated bytes (``RECORD_DOMAIN`` or ``RUMOR_DOMAIN`` followed by the
msgpack of a fixed list), then, in a record, its CA-signed certificate (a rumor has no room
for it: its reader takes the certificate from the writer's membership claims). A record
signature never passes for a rumor's, nor either for a membership claim or an operator
signature (other domains).

A rumor is taken only with a valid signature from its writer, a certified member this host
knows, that published it itself (its ``origin``: the signature covers neither origin nor
Lamport time, so a rumor republished by another is a replay); a tombstone must name its
writer as ``by``; a pool rumor in any state but ``deploying`` only from the shepherd it
names, entitled as for records, and only such a rumor lifts a tombstone (``from_shepherd``).

A record is **entitled** when its writer

* is the shepherd it names, and one of the ``SHEPHERD_RANKS`` members closest to the pool
  among the reader's members (live and counted) and the writer itself: the record of a
  shepherd that has died since is still taken by its successor; or the shepherd this host
  follows for the pool (its orders are taken: sdmesh.pools.authz); or
* wrote a **submission record**: state ``deploying``, nothing placed and nobody away, naming
  a shepherd entitled as above, and carrying an operator's descriptor signature envelope for
  this pool and this digest (checked against the reader's trust store when it has one). The
  member whose API accepted a submission writes it when the shepherd did not take the pool at
  once (sdmesh.agent.pools.operations.submit), and the shepherd takes it over from there.
  Only while the envelope is recent (``SUBMISSION_RECORD_TTL``): envelopes are public, and
  an old one must not let any member write a nothing-placed record above a running pool's.
  Even then a submission record never *supersedes* a shepherd running the pool
  (``supersedes``): it only starts a pool nobody shepherds yet.

Without identities nothing is signed or checked: records and rumors are trusted to whoever
holds the cluster key (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

import msgpack

from sdmesh.pools.authz import SHEPHERD_RANKS
from sdmesh.pools.ownership import by_distance
from sdmesh.pools.records import PoolRecord, is_member_name
from sdmesh.trust.identity import SIGNATURE_BYTES

if TYPE_CHECKING:
    from sdmesh.trust.host import HostTrust

RECORD_DOMAIN: Final = b"sdmesh-record-v1\x00"
RUMOR_DOMAIN: Final = b"sdmesh-rumor-v1\x00"
#: The fields a sealed rumor body adds (its other fields are the topic's own).
WRITER_FIELD: Final = "writer"
PROOF_FIELD: Final = "proof"

Prove = Callable[[bytes], bytes]
"""``prove(message)``: this host's proof over ``message`` (signature, then certificate)."""
CheckSigned = Callable[[str, bytes, bytes], bool]
"""``check_signed(name, message, proof)``: whether valid, unrevoked member ``name`` signed."""
EnvelopeCheck = Callable[[bytes, str, str], "str | None"]
"""``check(envelope, pool, digest)``: why an operator's envelope does not vouch for ``pool``
running ``digest`` on this host (its trust store), or None."""


def _pack(obj: object) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def record_bytes(record: PoolRecord) -> bytes:
    """What a record's writer signs: every field but the proof, in a fixed order (maps as
    sorted pairs, so the bytes do not depend on how a map was built or decoded)."""
    body = [
        record.pool,
        record.digest,
        record.generation,
        record.shepherd,
        record.state,
        sorted(record.placement.items()),
        record.reason,
        sorted((host, float(until)) for host, until in record.away.items()),
        sorted((host, sorted(leaves.items())) for host, leaves in record.vouched.items()),
        record.signature,
        record.writer,
    ]
    return RECORD_DOMAIN + _pack(body)


def rumor_bytes(topic: str, key: str, body: Mapping[str, object]) -> bytes:
    """What a rumor's writer signs: its topic, key and body without the proof (fields sorted
    by name). ValueError for a body whose field names are not all strings."""
    if not all(isinstance(name, str) for name in body):
        raise ValueError("a rumor body's field names are strings")
    fields = sorted((name, value) for name, value in body.items() if name != PROOF_FIELD)
    return RUMOR_DOMAIN + _pack([topic, key, fields])


def seal_record(record: PoolRecord, writer: str, prove: Prove) -> PoolRecord:
    """``record`` as ``writer`` stores it: named and proven."""
    from dataclasses import replace

    named = replace(record, writer=writer, proof=b"")
    return replace(named, proof=prove(record_bytes(named)))


def seal_rumor(
    topic: str, key: str, body: Mapping[str, object], writer: str, prove: Prove
) -> dict[str, object]:
    """A rumor body with its ``writer`` and ``proof`` fields. The proof is the signature
    alone: a rumor payload is at most 640 bytes, and the writer's certificate is in its
    membership claims, which every member has verified (``rumor_refusal``). A tombstone's
    ``by`` is dropped: the writer says it."""
    sealed = {name: value for name, value in body.items() if name != PROOF_FIELD}
    if sealed.get("by") == writer:
        del sealed["by"]
    sealed[WRITER_FIELD] = writer
    sealed[PROOF_FIELD] = prove(rumor_bytes(topic, key, sealed))[:SIGNATURE_BYTES]
    return sealed


#: How long after its operator signed the envelope a submission record is taken (seconds).
#: It only has to cover a shepherd that did not take the pool at once (leaving, restarting:
#: its successor takes the pool over within minutes); past it, a member replaying a public
#: envelope cannot write a nothing-placed record that replicas and readers take over the
#: genuine one (which would have the next shepherd destroy and rebuild every VM).
SUBMISSION_RECORD_TTL: Final = 3600.0


#: ``rumor_refusal``'s verdict for a writer whose certificate this host has not seen yet.
UNKNOWN_WRITER: Final = "unknown-writer"


def rumor_refusal(
    topic: str,
    key: str,
    body: Mapping[str, object],
    check: CheckSigned,
    certificate_of: Callable[[str], bytes | None],
    origin: str | None = None,
) -> tuple[str, str] | None:
    """Why a rumor body is not its writer's word, as (verdict, message), or None. Verdict
    ``UNKNOWN_WRITER``: this host knows no certificate for the writer yet (``certificate_of``:
    the certificate in the member's verified membership claims; a joiner may hear a rumor
    before its writer), to be tried again later; ``refused``: no writer or signature, a
    rumor whose ``origin`` (the member the membership layer says published it) is not its
    writer (a writer publishes its own rumors; another republishing one is replaying it), a
    tombstone (``by``) in another member's name, or a signature ``check`` refuses."""
    writer, signature = body.get(WRITER_FIELD), body.get(PROOF_FIELD)
    refused = "refused"
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        return refused, f"a {topic} rumor about {key} without its writer's proof"
    if not is_member_name(writer):
        return refused, f"a {topic} rumor about {key} without a well-formed writer"
    assert isinstance(writer, str)
    if origin is not None and origin != writer:
        return refused, f"a {topic} rumor about {key} by {writer} published by another member"
    if "by" in body and body["by"] != writer:
        return refused, f"a {topic} rumor about {key} written by {writer} in another's name"
    try:
        message = rumor_bytes(topic, key, body)
    except ValueError:
        return refused, f"a malformed {topic} rumor about {key}"
    certificate = certificate_of(writer)
    if not certificate:
        return UNKNOWN_WRITER, f"a {topic} rumor about {key} from {writer}, not a member yet"
    if not check(writer, message, signature + certificate):
        return refused, f"a {topic} rumor about {key} whose proof from {writer} does not verify"
    return None


def pool_rumor_refusal(
    key: str, body: Mapping[str, object], members: Iterable[str], followed: str = ""
) -> str | None:
    """Why a pool rumor, its proof checked, may not come from its writer, or None: a rumor
    that a pool is deploying may come from any member (the one whose API took a submission
    announces it), any other state only from the shepherd it names, entitled as for records
    (``SHEPHERD_RANKS`` closest among ``members`` and itself, or ``followed``)."""
    if body.get("state") == "deploying" or from_shepherd(key, body, members, followed):
        return None
    return f"a pool rumor about {key} from a member that does not shepherd it"


def from_shepherd(
    key: str, body: Mapping[str, object], members: Iterable[str], followed: str = ""
) -> bool:
    """Whether a pool rumor's writer is the shepherd it names, entitled as for records. Only
    such a rumor lifts a tombstone: a submitter's "deploying" rumor carries no envelope, and
    anyone may write one (an old envelope must not revive a terminated pool; the shepherd,
    which checked the envelope, announces the pool when it starts shepherding it)."""
    writer = body.get(WRITER_FIELD)
    return (
        isinstance(writer, str)
        and writer == body.get("shepherd")
        and (writer == followed or ranked_entitled(key, writer, members))
    )


def is_submission(record: PoolRecord) -> bool:
    """A record as a submitter writes it: deploying, nothing placed, nobody away."""
    return (
        record.state == "deploying"
        and not record.placement
        and not record.away
        and not record.vouched
    )


def is_foreign_submission(record: PoolRecord) -> bool:
    """A submission record written by another member than the shepherd it names."""
    return bool(record.writer) and record.writer != record.shepherd and is_submission(record)


def supersedes(stored: PoolRecord, generation: int) -> bool:
    """Whether ``stored``, read back by a shepherd running its pool at ``generation``, says
    another shepherd took the pool over meanwhile: a higher generation, and not a submission
    record by another member (it starts a pool nobody shepherds; above a running one it is a
    replayed envelope, never a takeover)."""
    return stored.generation > generation and not is_foreign_submission(stored)


def envelope_signed_at(signature: bytes) -> int | None:
    """When the operator signed ``signature`` (Unix seconds), or None if it is not one."""
    from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError

    try:
        return DescriptorSignature.decode(signature).signed_at if signature else None
    except SignatureFormatError:
        return None


def ranked_entitled(pool: str, name: str, members: Iterable[str]) -> bool:
    """Whether ``name`` is one of the ``SHEPHERD_RANKS`` closest to ``pool`` among
    ``members`` and itself."""
    return name in by_distance(pool, {*members, name})[:SHEPHERD_RANKS]


def envelope_shape_refusal(signature: bytes, pool: str, digest: str) -> str | None:
    """Why ``signature`` is not an operator's envelope for ``pool`` running ``digest`` (its
    shape and what it names; the signature itself is the trust store's to check)."""
    from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError

    if not signature:
        return "no operator signature"
    try:
        envelope = DescriptorSignature.decode(signature)
    except SignatureFormatError as error:
        return str(error)
    if envelope.pool != pool or envelope.digest != digest:
        return "an operator signature for another pool or descriptor"
    return None


def record_refusal(
    record: PoolRecord,
    members: Iterable[str],
    check: CheckSigned,
    followed: str = "",
    envelope_check: EnvelopeCheck | None = None,
    now: float | None = None,
) -> str | None:
    """Why a record read from the DHT is not taken, or None (module docstring): unsigned, a
    proof that does not verify, or a writer not entitled to write it. ``members``: the
    reader's members (live and counted); ``followed``: the shepherd whose orders this host
    follows for the pool; ``envelope_check``: the reader's trust store, if any; ``now``:
    the reader's wall clock (Unix seconds), against which a submission record's envelope
    must be at most ``SUBMISSION_RECORD_TTL`` old (None: not checked)."""
    pool, writer = record.pool, record.writer
    if not writer or not record.proof:
        return f"pool {pool}: a record without its writer's proof"
    if not check(writer, record_bytes(record), record.proof):
        return f"pool {pool}: a record whose proof from {writer} does not verify"
    names = set(members)
    if writer == record.shepherd and (writer == followed or ranked_entitled(pool, writer, names)):
        return None
    if writer != record.shepherd and is_submission(record):
        if not ranked_entitled(pool, record.shepherd, names):
            return f"pool {pool}: a submission record naming {record.shepherd}, not its shepherd"
        problem = envelope_shape_refusal(record.signature, pool, record.digest)
        signed_at = envelope_signed_at(record.signature)
        if (
            problem is None
            and now is not None
            and signed_at is not None
            and signed_at < now - SUBMISSION_RECORD_TTL
        ):
            return (
                f"pool {pool}: a submission record by {writer} whose operator signature is "
                f"over {SUBMISSION_RECORD_TTL:.0f} s old"
            )
        if problem is None and envelope_check is not None:
            problem = envelope_check(record.signature, pool, record.digest)
        if problem is None:
            return None
        return f"pool {pool}: a submission record by {writer} without a valid operator signature"
    return f"pool {pool}: a record written by {writer}, not entitled to write it"


def envelope_checker(trust: HostTrust, clock: Callable[[], float]) -> EnvelopeCheck:
    """The trust store's check of a submission record's envelope (a reload counts at once;
    verified envelopes are remembered as the leaf guard remembers them)."""
    from sdmesh.trust.authorize import check_envelope
    from sdmesh.trust.host import MAX_VERIFIED
    from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError

    def check(signature: bytes, pool: str, digest: str) -> str | None:
        if len(trust.verified) > MAX_VERIFIED:
            trust.verified.clear()
        try:
            envelope = DescriptorSignature.decode(signature)
        except SignatureFormatError as error:
            return str(error)
        refusal = check_envelope(envelope, digest, pool, trust.store, clock(), trust.verified)
        return refusal.message if refusal is not None else None

    return check
