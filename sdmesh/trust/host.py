"""One host's signature checking, as the agent holds it: its trust store (reloadable), the
operator key it may sign API submissions with, and the count of what it refused.

The agent makes one ``HostTrust`` at start (``HostTrust.open``), calls ``reload`` on SIGHUP,
``check_leaf`` before each deploy or start it runs, ``check_submission`` (and, for an
unsigned request, ``sign_for_caller``) where its API accepts a pool, and yields
``refusal_metric(trust.refusals)`` from its metrics collector.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sdmesh.trust.authorize import (
    Refusal,
    RefusalCounter,
    authorize_order,
    authorize_submission,
    sign_for_caller,
)
from sdmesh.trust.keys import OperatorKey, load_private_key
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import DescriptorSignature
from sdmesh.trust.store import TrustStore

log = logging.getLogger(__name__)

#: Verified envelopes remembered (one per pool with leaves here; about 250 bytes each).
MAX_VERIFIED = 10_000


class HostTrust:
    """The trust store a host checks against, swapped whole on reload."""

    def __init__(
        self, operators_dir: Path, store: TrustStore, signer: OperatorKey | None = None
    ) -> None:
        self.operators_dir = operators_dir
        self.store = store
        self.signer = signer
        self.refusals = RefusalCounter()
        #: Envelopes whose signature verified against ``store`` (emptied with each reload).
        self.verified: set[bytes] = set()

    @classmethod
    def open(cls, operators_dir: Path, signing_key: str | None = None) -> HostTrust:
        """Load the store (problems are logged; nothing trusted is a warning, not an error:
        the host then runs no pool) and the agent's signing key; KeyFileError for a signing
        key that is configured but unusable (the agent should refuse to start)."""
        signer = load_private_key(Path(signing_key)) if signing_key else None
        trust = cls(operators_dir, TrustStore(), signer)
        trust.reload()
        return trust

    def reload(self) -> list[str]:
        """Read the trust store again (SIGHUP); its problems, also logged."""
        store = TrustStore.load(self.operators_dir)
        for problem in store.problems:
            log.warning("trust store: %s", problem)
        log.info(
            "trust store %s: %d operator key(s) trusted, %d revoked",
            self.operators_dir,
            len(store.operators),
            len(store.revoked),
        )
        self.store = store
        self.verified = set()
        return list(store.problems)

    def check_leaf(
        self, signature: bytes, spec_digest: str, pool: str, kind: str, now: float
    ) -> Refusal | None:
        """Whether to run a leaf of class ``kind``; a refusal is counted."""
        if len(self.verified) > MAX_VERIFIED:
            self.verified.clear()
        refusal = authorize_order(
            signature, spec_digest, pool, kind, self.store, now, self.verified
        )
        if refusal is not None:
            self.refusals.count(refusal)
        return refusal

    def check_submission(
        self,
        envelope: DescriptorSignature | None,
        spec_digest: str,
        pool: str,
        kinds: list[str],
        now: float,
    ) -> Refusal | None:
        """Whether this host would run every leaf class of a submitted pool; counted."""
        refusal = authorize_submission(envelope, spec_digest, pool, kinds, self.store, now)
        if refusal is not None:
            self.refusals.count(refusal)
        return refusal

    def sign_for_caller(
        self, spec_digest: str, pool: str, kinds: list[str], caller_role: Role, now: float
    ) -> DescriptorSignature | Refusal | None:
        """The agent's signature for an unsigned submission: None when it has no signing key
        (the submission stays unsigned, and is refused); a Refusal when the pool needs more
        than the caller's API role (the key never lends more than the caller has)."""
        if self.signer is None:
            return None
        made = sign_for_caller(self.signer, spec_digest, pool, kinds, caller_role, now)
        if isinstance(made, Refusal):
            self.refusals.count(made)
        return made
