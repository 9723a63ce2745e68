"""Member names bound to host identities: the sans-IO checker the membership core consults.

Without it, anyone holding the cluster key may say "I am ``b``, at this address" or "``b``
left", and the mesh believes it. With it, the claims only a member may make about itself carry
a *proof*: its Ed25519 signature over the claim, followed by its CA-signed certificate
(sdmesh/trust/identity.py). Those claims are

* ``Alive`` about a member (its join, refutations and metadata updates: name, incarnation,
  address and a digest of the metadata are signed), also inside push-pull state;
* its graceful leave (``Dead`` with ``left`` and the member itself as sender).

Suspect and dead rumours about others stay unsigned: SWIM needs any member to report a
failure it saw. An unsigned ``left`` from someone else (an operator's force-leave) is only
believed about a member already held dead.

The core checks a claim only when it would act on it (a newer incarnation, a member it does
not know), and the checker caches what it verified per name and incarnation, so a claim
gossiped again costs a dict look-up. Certificates are verified once per distinct certificate.

Revocations are CA-signed and travel as rumors on ``REVOKE_TOPIC`` (one per serial); the core
asks ``admit_rumor`` before it takes any rumor, so a forged revocation (or a forged value
meant to displace a real one) is never stored. A revoked member is dropped, its later claims
refused, and datagrams and streams from its last address are dropped.

The checker reads the wall clock for certificate validity (the core's clock is monotonic):
``wall`` is injected, so tests pin it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from sdmesh.membership.member import Address, Meta
from sdmesh.membership.messages import Rumor
from sdmesh.trust.identity import (
    SIGNATURE_BYTES,
    HostCertificate,
    IdentityError,
    Revocation,
    alive_bytes,
    leave_bytes,
    meta_digest,
)
from sdmesh.trust.keys import OperatorKey, PublicKey

REVOKE_TOPIC: Final = "sdmesh.revoked"
#: Names whose highest verified incarnation we remember (forgotten when the core reaps one).
MAX_REMEMBERED: Final = 65_536
#: Distinct certificates whose CA signature we remember having checked.
MAX_CERTS: Final = 65_536


@dataclass
class IdentityRefusals:
    """Claims refused, by reason (``/v1/health`` shows them with the transport's drops)."""

    unsigned: int = 0
    """A claim only the member may make, without its proof."""
    forged: int = 0
    """The signature does not verify under the certificate's key."""
    wrong_name: int = 0
    """A valid certificate, but for another name than the claim's."""
    bad_certificate: int = 0
    """Malformed, another CA's, not yet valid or expired."""
    revoked: int = 0
    replay: int = 0
    """An incarnation lower than one already verified for that name."""
    blocked: int = 0
    """Datagrams or streams from a revoked member's address."""
    bad_revocation: int = 0
    """A rumor on the revocation topic that the CA did not sign."""

    def as_dict(self) -> dict[str, int]:
        return {f"identity_{k}": v for k, v in dataclasses.asdict(self).items()}


@dataclass(slots=True)
class _Verified:
    incarnation: int
    addr: Address
    meta: Meta
    proof: bytes
    serial: int


class IdentityChecker:
    """One member's view of who may speak for whom; owned by the core."""

    def __init__(
        self,
        ca: PublicKey,
        key: OperatorKey,
        certificate: HostCertificate,
        revocations: Iterable[Revocation] = (),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.refusals = IdentityRefusals()
        self._wall = wall
        self._ca = ca
        self._key = key
        self._certificate = certificate
        self._cert_bytes = certificate.encode()
        self._revoked_serials: dict[int, str] = {}
        self._verified: dict[str, _Verified] = {}
        self._highest: dict[str, int] = {}
        self._certs: dict[bytes, HostCertificate] = {}
        self._blocked: dict[Address, str] = {}
        self._expel: list[str] = []
        #: Per rumor topic, a check a rumor must pass before the core takes it: an upper
        #: layer's (the pool service checks the writer's proof on pool and tombstone rumors).
        #: A rumor refused is neither stored nor forwarded, so a forged one never displaces a
        #: genuine one; push-pull offers it again later (a writer not known yet).
        self.rumor_checks: dict[str, Callable[[Rumor], bool]] = {}
        for revocation in revocations:
            self.revoke(revocation)

    # ------------------------------------------------------------------ our own claims

    @property
    def name(self) -> str:
        return self._certificate.name

    @property
    def ca(self) -> PublicKey:
        return self._ca

    @property
    def certificate(self) -> HostCertificate:
        return self._certificate

    @property
    def proof_size(self) -> int:
        """Bytes a proof adds to a claim (msgpack bin header included)."""
        return SIGNATURE_BYTES + len(self._cert_bytes) + 3

    def replace(self, ca: PublicKey, key: OperatorKey, certificate: HostCertificate) -> None:
        """A reload: new CA key, host key or certificate (renewed). Cached verifications
        are dropped when the CA changes."""
        if ca != self._ca:
            self._verified.clear()
            self._certs.clear()
        self._ca, self._key, self._certificate = ca, key, certificate
        self._cert_bytes = certificate.encode()

    def prove_alive(self, incarnation: int, addr: Address, meta: Meta) -> bytes:
        message = alive_bytes(self.name, incarnation, addr[0], addr[1], meta_digest(meta))
        return self._key.sign(message) + self._cert_bytes

    def prove_leave(self, incarnation: int) -> bytes:
        return self._key.sign(leave_bytes(self.name, incarnation)) + self._cert_bytes

    def prove(self, message: bytes) -> bytes:
        """Our proof over ``message``, which must carry its own domain prefix (a keyring
        instruction, say) so it never passes for an alive or a leave."""
        return self._key.sign(message) + self._cert_bytes

    def check_signed(self, name: str, message: bytes, proof: bytes) -> bool:
        """Whether valid, unrevoked member ``name`` signed ``message`` (counted if not)."""
        cert = self._claim_certificate(name, None, proof)
        if cert is None:
            return False
        if not cert.key.verify(proof[:SIGNATURE_BYTES], message):
            self.refusals.forged += 1
            return False
        return True

    # ------------------------------------------------------------------ others' claims

    def check_alive(
        self, name: str, incarnation: int, addr: Address, meta: Meta, proof: bytes
    ) -> bool:
        """Whether ``name`` itself said it is alive at ``incarnation``, ``addr``, ``meta``."""
        seen = self._verified.get(name)
        if (
            seen is not None
            and seen.incarnation == incarnation
            and seen.proof == proof
            and seen.addr == addr
            and seen.meta == meta
        ):
            return self._serial_ok(seen.serial)
        cert = self._claim_certificate(name, incarnation, proof)
        if cert is None:
            return False
        message = alive_bytes(name, incarnation, addr[0], addr[1], meta_digest(meta))
        if not cert.key.verify(proof[:SIGNATURE_BYTES], message):
            self.refusals.forged += 1
            return False
        self._remember(name, _Verified(incarnation, addr, meta, proof, cert.serial))
        return True

    def check_leave(self, name: str, incarnation: int, proof: bytes) -> bool:
        """Whether ``name`` itself announced its leave at ``incarnation``."""
        cert = self._claim_certificate(name, incarnation, proof)
        if cert is None:
            return False
        if not cert.key.verify(proof[:SIGNATURE_BYTES], leave_bytes(name, incarnation)):
            self.refusals.forged += 1
            return False
        self._highest[name] = max(incarnation, self._highest.get(name, 0))
        return True

    def refuse_unsigned(self) -> bool:
        """Count a claim that needed a proof and had none; always False."""
        self.refusals.unsigned += 1
        return False

    def forget(self, name: str) -> None:
        """The core reaped ``name``: a restart at any incarnation is welcome again."""
        self._verified.pop(name, None)
        self._highest.pop(name, None)

    def _claim_certificate(
        self, name: str, incarnation: int | None, proof: bytes
    ) -> HostCertificate | None:
        if len(proof) <= SIGNATURE_BYTES:
            self.refusals.unsigned += 1
            return None
        if incarnation is not None and incarnation < self._highest.get(name, 0):
            self.refusals.replay += 1
            return None
        cert = self._certificate_of(proof[SIGNATURE_BYTES:])
        if cert is None:
            return None
        if cert.name != name:
            self.refusals.wrong_name += 1
            return None
        if not self._serial_ok(cert.serial):
            return None
        return cert

    def _certificate_of(self, data: bytes) -> HostCertificate | None:
        cert = self._certs.get(data)
        if cert is None:
            try:
                cert = HostCertificate.decode(data)
            except IdentityError:
                self.refusals.bad_certificate += 1
                return None
            if cert.problem(self._ca, self._wall()) is not None:
                self.refusals.bad_certificate += 1
                return None
            if len(self._certs) >= MAX_CERTS:
                self._certs.clear()
            self._certs[data] = cert
        elif not cert.not_before <= self._wall() < cert.not_after:
            self.refusals.bad_certificate += 1
            return None
        return cert

    def _serial_ok(self, serial: int) -> bool:
        if serial in self._revoked_serials:
            self.refusals.revoked += 1
            return False
        return True

    def _remember(self, name: str, verified: _Verified) -> None:
        if len(self._verified) >= MAX_REMEMBERED and name not in self._verified:
            self._verified.clear()
        self._verified[name] = verified
        if len(self._highest) >= MAX_REMEMBERED and name not in self._highest:
            self._highest.clear()
        self._highest[name] = max(verified.incarnation, self._highest.get(name, 0))

    # ------------------------------------------------------------------ revocation

    def admit_rumor(self, rumor: Rumor) -> bool:
        """Whether the core may take ``rumor``: on the revocation topic only a CA-signed
        revocation stored under its own serial; on a topic with a ``rumor_checks`` entry, what
        it says; anything else."""
        if rumor.topic != REVOKE_TOPIC:
            check = self.rumor_checks.get(rumor.topic)
            return check is None or check(rumor)
        try:
            revocation = Revocation.decode(rumor.payload)
        except IdentityError:
            revocation = None
        if (
            revocation is None
            or rumor.key != str(revocation.serial)
            or not revocation.valid_under(self._ca)
        ):
            self.refusals.bad_revocation += 1
            return False
        self.revoke(revocation)
        return True

    def revoke(self, revocation: Revocation) -> bool:
        """Take a revocation (its CA signature is checked); True when it is news. Members
        holding the revoked certificate are queued for ``take_expelled``."""
        if revocation.serial in self._revoked_serials or not revocation.valid_under(self._ca):
            return False
        self._revoked_serials[revocation.serial] = revocation.name
        for name, seen in list(self._verified.items()):
            if seen.serial == revocation.serial:
                self._expel.append(name)
                self._blocked[seen.addr] = name
                del self._verified[name]
        return True

    def take_expelled(self) -> list[str]:
        """Members to drop since the last call (their certificate was revoked)."""
        expel, self._expel = self._expel, []
        return expel

    def blocked(self, addr: Address) -> bool:
        """Whether ``addr`` was a revoked member's: its datagrams and streams are dropped
        (counted). A host that takes the address over must be enrolled under another one."""
        if addr in self._blocked:
            self.refusals.blocked += 1
            return True
        return False

    def blocked_host(self, host: str) -> bool:
        """Whether ``host`` was a revoked member's IP address (not counted: the caller
        decides, as other members may share it)."""
        return any(addr[0] == host for addr in self._blocked)

    @property
    def revoked_serials(self) -> dict[int, str]:
        return dict(self._revoked_serials)

    @property
    def self_revoked(self) -> bool:
        return self._certificate.serial in self._revoked_serials

    def revocation_rumor(self, revocation: Revocation) -> tuple[str, str, bytes]:
        """``(topic, key, payload)`` to publish ``revocation`` to the mesh."""
        return REVOKE_TOPIC, str(revocation.serial), revocation.encode()
