"""Whether a host may run a leaf of a pool: the signature check every host makes.

Pure: a signature envelope, the digest of the descriptor the host is about to run, the pool,
the leaf's ``sfClass``, the host's trust store and ``now`` in; ``None`` (run it) or a
:class:`Refusal` (do not, and say why) out. The API makes the same check for every component
at submission (:func:`authorize_submission`), so a submitter hears at once what every host
would refuse.

Signatures do not expire. A pool's record is read again long after its submission (a new
shepherd, a host restarting, a takeover), so an expiring signature would strand running pools;
and an old envelope can only ever ask for exactly what it names: the same pool name running
the same descriptor. Resubmitting a terminated pool with its old signature is therefore
allowed (it recreates what the signer signed). What limits a signature is checked every time,
against the host's *current* trust store: a revoked key, or a signer since demoted, stops
being honoured at the next leaf operation. Only signatures dated more than
``MAX_CLOCK_SKEW`` seconds in the future are refused (a clock gone wrong, or an envelope
prepared to look fresh later).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableSet
from dataclasses import dataclass
from typing import Any, Final

from sdmesh.trust.components import required_role, role_for_all
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError, sign_descriptor
from sdmesh.trust.store import TrustStore

#: Seconds a signature may be dated ahead of this host's clock.
MAX_CLOCK_SKEW: Final = 300.0

#: Every refusal reason, as the metric's ``reason`` label and the event's ``reason``.
REASONS: Final = (
    "unsigned",
    "unknown-key",
    "revoked-key",
    "bad-signature",
    "wrong-signer",
    "wrong-pool",
    "wrong-digest",
    "future",
    "role-not-granted",
    "role-too-low",
    "generation-not-covered",  # a termination signed up to a generation below the pool's
)


@dataclass(frozen=True)
class Refusal:
    """Why a leaf (or a submission) is not run: a ``reason`` from :data:`REASONS` and a
    message for people that quotes only the envelope, the pool and the component class."""

    reason: str
    message: str


def authorize_leaf(
    envelope: DescriptorSignature | None,
    spec_digest: str,
    pool: str,
    kind: str,
    trust: TrustStore,
    now: float,
    verified: MutableSet[bytes] | None = None,
) -> Refusal | None:
    """``None`` when ``envelope`` lets this host run a component of class ``kind`` of
    ``pool``, whose descriptor has digest ``spec_digest``; otherwise why not.

    ``verified``: envelopes (as bytes) whose signature already verified against ``trust``;
    the caller keeps it per trust store (every leaf of a pool carries the same envelope, and
    the Ed25519 verification is most of the cost), and empties it when the store changes."""
    refusal = check_envelope(envelope, spec_digest, pool, trust, now, verified)
    if refusal is not None or envelope is None:
        return refusal or Refusal("unsigned", f"pool {pool} carries no operator signature")
    return _role_check(envelope, pool, kind)


def authorize_order(
    signature: bytes,
    spec_digest: str,
    pool: str,
    kind: str,
    trust: TrustStore,
    now: float,
    verified: MutableSet[bytes] | None = None,
) -> Refusal | None:
    """:func:`authorize_leaf` for the envelope bytes an order or a record carries (empty:
    unsigned; malformed: refused as a bad signature)."""
    if not signature:
        return authorize_leaf(None, spec_digest, pool, kind, trust, now)
    try:
        envelope = DescriptorSignature.decode(signature)
    except SignatureFormatError as error:
        return Refusal("bad-signature", f"pool {pool}: {error}")
    return authorize_leaf(envelope, spec_digest, pool, kind, trust, now, verified)


def check_envelope(
    envelope: DescriptorSignature | None,
    spec_digest: str,
    pool: str,
    trust: TrustStore,
    now: float,
    verified: MutableSet[bytes] | None = None,
) -> Refusal | None:
    """Everything but the component's role: a trusted, unrevoked key whose signature
    verifies, for this pool and this digest, not from the future, within the key's role."""
    if envelope is None:
        return Refusal("unsigned", f"pool {pool} carries no operator signature")
    if trust.is_revoked(envelope.key_id):
        return Refusal(
            "revoked-key",
            f"pool {pool} is signed by key {envelope.key_id} ({envelope.signer}), "
            "which this host has revoked",
        )
    operator = trust.lookup(envelope.key_id)
    if operator is None:
        return Refusal(
            "unknown-key",
            f"pool {pool} is signed by key {envelope.key_id} ({envelope.signer}), "
            "which this host does not trust",
        )
    known = verified is not None and envelope.encode() in verified
    if not known and not operator.key.verify(envelope.signature, envelope.signed_bytes()):
        return Refusal(
            "bad-signature",
            f"pool {pool}: the signature of key {envelope.key_id} does not verify "
            "(altered after signing)",
        )
    if verified is not None and not known:
        verified.add(envelope.encode())
    if envelope.signer != operator.key.name:
        # The name is the signer's own claim: only the trusted key's name may appear in
        # refusals, events and audit lines, or one operator signs as another.
        return Refusal(
            "wrong-signer",
            f"pool {pool} is signed by key {envelope.key_id}, which this host trusts as "
            f"{operator.key.name}, not as the name the envelope gives",
        )
    if envelope.pool != pool:
        return Refusal(
            "wrong-pool",
            f"pool {pool} carries a signature for pool {envelope.pool}",
        )
    if envelope.digest != spec_digest:
        return Refusal(
            "wrong-digest",
            f"pool {pool}: its descriptor (digest {spec_digest[:12]}) is not the one signed "
            f"(digest {envelope.digest[:12]})",
        )
    if envelope.signed_at > now + MAX_CLOCK_SKEW:
        return Refusal(
            "future",
            f"pool {pool}: its signature is dated {int(envelope.signed_at - now)} s "
            f"in the future (more than {int(MAX_CLOCK_SKEW)} s)",
        )
    if not operator.role.allows(envelope.role):
        return Refusal(
            "role-not-granted",
            f"pool {pool}: {operator.key.name} signed as {envelope.role.label}, "
            f"but this host grants that key {operator.role.label} only",
        )
    return None


def _role_check(envelope: DescriptorSignature, pool: str, kind: str) -> Refusal | None:
    needed = required_role(kind)
    if not envelope.role.allows(needed):
        return Refusal(
            "role-too-low",
            f"pool {pool}: {kind} needs a signature with role {needed.label}, "
            f"this one is {envelope.role.label}",
        )
    return None


def authorize_submission(
    envelope: DescriptorSignature | None,
    spec_digest: str,
    pool: str,
    kinds: Iterable[str],
    trust: TrustStore,
    now: float,
) -> Refusal | None:
    """:func:`authorize_leaf` for every component class of a descriptor at once (one
    signature verification): the first refusal, or None when this host would run all of
    them. Other hosts may trust other keys; each checks again before running its leaves."""
    refusal = check_envelope(envelope, spec_digest, pool, trust, now)
    if refusal is not None or envelope is None:
        return refusal or Refusal("unsigned", f"pool {pool} carries no operator signature")
    for kind in sorted(set(kinds)):
        refusal = _role_check(envelope, pool, kind)
        if refusal is not None:
            return refusal
    return None


def sign_for_caller(
    key: OperatorKey,
    spec_digest: str,
    pool: str,
    kinds: Iterable[str],
    caller_role: Role,
    now: float,
) -> DescriptorSignature | Refusal:
    """An agent's signature, with its own operator ``key``, on a submission that came without
    one: with the least role the pool's component classes need, and a Refusal when that is
    more than the caller's API role (the agent's key never lends a caller more than it has)."""
    needed = role_for_all(kinds)
    if not caller_role.allows(needed):
        return Refusal(
            "role-too-low",
            f"pool {pool} needs role {needed.label} (its components), "
            f"the request has {caller_role.label}",
        )
    return sign_descriptor(key, pool, spec_digest, needed, now)


class RefusalCounter:
    """Refusals counted by reason, for ``sdmesh_descriptor_refusals_total{reason=...}``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def count(self, refusal: Refusal) -> None:
        self.counts[refusal.reason] += 1

    def samples(self) -> list[tuple[str, int]]:
        """(reason, count) for every reason, zeros included (stable series)."""
        return [(reason, self.counts[reason]) for reason in REASONS]


METRIC_NAME: Final = "sdmesh_descriptor_refusals"
METRIC_HELP: Final = (
    "Leaves, submissions and terminations refused by the operator-signature check, by reason."
)


def refusal_metric(counter: RefusalCounter) -> Any:
    """A Prometheus counter family of ``counter`` (yield it from the agent's collector)."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(METRIC_NAME, METRIC_HELP, labels=["reason"])
    for reason, value in counter.samples():
        family.add_metric([reason], value)
    return family


def refusal_event(refusal: Refusal, pool: str, path: str, host: str) -> dict[str, Any]:
    """The event the agent publishes for a refusal (``GET /v1/events``):
    ``{"type": "refused", "pool", "path", "host", "reason", "message"}``; ``path`` is empty
    for a refused submission."""
    return {
        "type": "refused",
        "pool": pool,
        "path": path,
        "host": host,
        "reason": refusal.reason,
        "message": refusal.message,
    }
