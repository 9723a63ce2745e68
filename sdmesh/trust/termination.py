"""An operator's signature on the termination of a pool (issue 12, item 2).

A tombstone ends every generation of a pool up to its own: whoever can write one can end a
pool and keep its name from running again below that generation. With a trust store, every
termination (API call, terminate RPC, tombstone rumor) carries ``"terminate pool P up to
generation G"`` signed by an operator key the host trusts with at least ``operate``; an
unsigned one is refused at every generation (sdmesh.agent.pools.authz).

Who signs: the operator (``sdmesh terminate --key``), or the agent with its
``api-signing-key`` for an API caller it authorized (:func:`api_termination`); never a host
for a mesh request. Hosts pass the operator's signature on as they received it (the terminate
RPC, the tombstone rumor), so a cluster-key holder cannot turn an unsigned request into a
signed tombstone.

``G`` is the generation the signer knew plus :data:`SLACK`, and the tombstone's generation is
``G`` itself: a shepherd that took the pool over (one generation per takeover) between the
signer's look and the request is still covered, and a resubmission of the name starts above
``G``, beyond the reach of the (public) signature.

What is signed is domain-separated canonical bytes, ``b"sdmesh-terminate-v1\\0"`` and the
msgpack of a fixed list, so no descriptor signature can pass for one, nor one for a descriptor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from sdmesh.trust.authorize import Refusal
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import KEY_ID_HEX, OPERATOR_NAME, OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import SIGNATURE_BYTES
from sdmesh.trust.store import TrustStore

DOMAIN: Final = b"sdmesh-terminate-v1\x00"
VERSION: Final = 1
MAX_BYTES: Final = 512
#: Generations a termination signs beyond the newest the signer knows of the pool: room for
#: the takeovers (one generation each) the signer has not heard of yet.
SLACK: Final = 16
#: Generations are bounded as sdmesh.pools.generations bounds them (a lower layer: repeated).
_MAX_GENERATION: Final = 2**31 - 1
_HEX = frozenset("0123456789abcdef")


class TerminationFormatError(ValueError):
    """Bytes that are not a well-formed termination signature."""


@dataclass(frozen=True)
class TerminationSignature:
    """``signer`` (key ``key_id``) asked, at ``signed_at``, to end pool ``pool`` up to
    generation ``generation``."""

    pool: str
    generation: int
    key_id: str
    signer: str
    signed_at: int
    signature: bytes

    def signed_bytes(self) -> bytes:
        body = [self.pool, self.generation, self.key_id, self.signer, self.signed_at]
        return DOMAIN + bytes(msgpack.packb(body, use_bin_type=True))

    def encode(self) -> bytes:
        body = [
            VERSION,
            self.pool,
            self.generation,
            self.key_id,
            self.signer,
            self.signed_at,
            self.signature,
        ]
        return bytes(msgpack.packb(body, use_bin_type=True))

    def to_text(self) -> str:
        """For the API's JSON (``DELETE /v1/pools/P`` body ``{"signature": text}``)."""
        return base64.b64encode(self.encode()).decode()

    @classmethod
    def from_text(cls, text: object) -> TerminationSignature:
        """From the API's JSON: the base64 of a termination signature."""
        if not isinstance(text, str) or len(text) > MAX_BYTES * 2:
            raise TerminationFormatError(
                "'signature' must be the base64 of a termination signature"
            )
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise TerminationFormatError("'signature' is not base64") from None
        return cls.decode(data)

    @classmethod
    def decode(cls, data: object) -> TerminationSignature:
        if not isinstance(data, bytes) or len(data) > MAX_BYTES:
            raise TerminationFormatError("a termination signature is at most 512 bytes")
        try:
            obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception:  # msgpack raises several unrelated types
            raise TerminationFormatError("the termination signature is not msgpack") from None
        kinds = (int, str, int, str, str, int, bytes)
        if not isinstance(obj, list) or len(obj) != len(kinds) or obj[0] != VERSION:
            raise TerminationFormatError("malformed termination signature")
        if not all(
            isinstance(v, k) and not isinstance(v, bool) for v, k in zip(obj, kinds, strict=True)
        ):
            raise TerminationFormatError("malformed termination signature")
        _, pool, generation, key_id, signer, signed_at, signature = obj
        if not OPERATOR_NAME.fullmatch(pool) or not OPERATOR_NAME.fullmatch(signer):
            raise TerminationFormatError("malformed name in the termination signature")
        if not 0 <= generation <= _MAX_GENERATION:
            raise TerminationFormatError("generation out of range in the termination signature")
        if len(key_id) != KEY_ID_HEX or not set(key_id) <= _HEX:
            raise TerminationFormatError("malformed key id in the termination signature")
        if len(signature) != SIGNATURE_BYTES:
            raise TerminationFormatError("malformed signature in the termination signature")
        return cls(pool, generation, key_id, signer, signed_at, signature)


def sign_termination(key: OperatorKey, pool: str, generation: int, now: float) -> bytes:
    """``key``'s signed request to end ``pool`` up to ``generation``, encoded."""
    unsigned = TerminationSignature(pool, generation, key.public.key_id, key.name, int(now), b"")
    message = unsigned.signed_bytes()
    return TerminationSignature(
        pool, generation, key.public.key_id, key.name, int(now), key.sign(message)
    ).encode()


def signed_up_to(known: int) -> int:
    """The generation a termination signs when the signer knows generation ``known``:
    ``known + SLACK``, at most the largest generation (a signature above it is malformed)."""
    return min(known + SLACK, _MAX_GENERATION)


def termination_text(key: OperatorKey, pool: str, known: int, now: float) -> str:
    """What ``sdmesh terminate --key`` sends: ``key``'s signature ending ``pool`` up to the
    generation it was told (``known``) plus :data:`SLACK`, as the API's base64 text."""
    signed = sign_termination(key, pool, signed_up_to(known), now)
    return base64.b64encode(signed).decode()


def signed_generation(data: bytes) -> int:
    """The generation a termination signature covers (TerminationFormatError if malformed)."""
    return TerminationSignature.decode(data).generation


def check_termination(
    data: object, pool: str, generation: int, store: TrustStore
) -> Refusal | None:
    """Why ``data`` does not authorize ending ``pool`` up to ``generation`` on a host
    trusting ``store``, or None: a trusted, unrevoked key with at least ``operate``, whose
    signature verifies, for this pool, up to at least this generation. Reasons as for
    descriptors (sdmesh.trust.authorize.REASONS)."""
    if not data:
        return Refusal("unsigned", "unsigned")
    try:
        signed = TerminationSignature.decode(data)
    except TerminationFormatError as error:
        return Refusal("bad-signature", f"pool {pool}: {error}")
    if store.is_revoked(signed.key_id):
        return Refusal("revoked-key", f"key {signed.key_id} is revoked here")
    operator = store.lookup(signed.key_id)
    if operator is None:
        return Refusal("unknown-key", f"key {signed.key_id} is not trusted here")
    if not operator.role.allows(Role.OPERATE):
        return Refusal(
            "role-not-granted",
            f"key {signed.key_id} may not end pools here (it is trusted as "
            f"{operator.role.label}, ending a pool needs {Role.OPERATE.label})",
        )
    if not operator.key.verify(signed.signature, signed.signed_bytes()):
        return Refusal("bad-signature", f"the signature of key {signed.key_id} does not verify")
    if signed.signer != operator.key.name:
        return Refusal(
            "wrong-signer",
            f"key {signed.key_id} is trusted here as {operator.key.name}, not as the name "
            "the signature gives",
        )
    if signed.pool != pool:
        return Refusal("wrong-pool", f"the signature ends pool {signed.pool}, not pool {pool}")
    if signed.generation < generation:
        return Refusal(
            "generation-not-covered",
            f"the signature ends pool {pool} up to generation {signed.generation}, "
            f"below {generation}",
        )
    return None


def termination_refusal(data: object, pool: str, generation: int, store: TrustStore) -> str | None:
    """:func:`check_termination`'s message, or None."""
    refusal = check_termination(data, pool, generation, store)
    return refusal.message if refusal is not None else None


def termination_check(trust: HostTrust) -> Callable[[object, str, int], str | None]:
    """The check a pool service applies to every termination from the mesh (reads the store
    at each call: a reload counts at once)."""
    return lambda data, pool, generation: termination_refusal(data, pool, generation, trust.store)


def api_termination(
    given: object, pool: str, newest: int, trust: HostTrust, now: float
) -> bytes | Refusal:
    """What the API does with a termination of ``pool``, whose newest generation this agent
    knows is ``newest``: the signature to publish, or the Refusal to answer with 403
    (counted). ``given``: the request's ``signature`` text (None: unsigned). An unsigned
    request, from a caller the API already authorized (``operate``), is signed with the
    agent's own key up to ``newest + SLACK`` (at most the largest generation) when it has
    one, and refused otherwise; either signature is checked against this host's trust store
    (the agent's key may have been revoked or demoted since it was configured: then it ends
    nothing here, as it would end nothing on a host that trusts the same operators).
    TerminationFormatError (a 400) for text that is no signature."""
    if given is None:
        if trust.signer is None:
            unsigned = Refusal(
                "unsigned",
                f"terminating pool {pool} needs an operator signature: sign it "
                "(sdmesh terminate --key KEY), or configure this agent's api-signing-key",
            )
            trust.refusals.count(unsigned)
            return unsigned
        data = sign_termination(trust.signer, pool, signed_up_to(newest), now)
    else:
        data = TerminationSignature.from_text(given).encode()
    refusal = check_termination(data, pool, newest, trust.store)
    if refusal is not None:
        trust.refusals.count(refusal)
        return refusal
    return data
