"""An operator's signature on the termination of a pool (issue 12, item 2).

A tombstone ends every generation of a pool up to its own: whoever can write one can end a
pool and keep its name from running again below that generation. With a trust store, a
termination carries ``"terminate pool P up to generation G"`` signed by an operator key the
host trusts with at least ``operate`` (the agent signs with its ``api-signing-key`` for the
API caller it already authorized); hosts then take an unsigned termination only up to the
newest generation they know of the pool (sdmesh.agent.pools.authz).

What is signed is domain-separated canonical bytes, ``b"sdmesh-terminate-v1\\0"`` and the
msgpack of a fixed list, so no descriptor signature can pass for one, nor one for a descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import KEY_ID_HEX, OPERATOR_NAME, OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import SIGNATURE_BYTES
from sdmesh.trust.store import TrustStore

DOMAIN: Final = b"sdmesh-terminate-v1\x00"
VERSION: Final = 1
MAX_BYTES: Final = 512
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


def termination_refusal(data: object, pool: str, generation: int, store: TrustStore) -> str | None:
    """Why ``data`` does not authorize ending ``pool`` up to ``generation`` on a host
    trusting ``store``, or None: a trusted, unrevoked key with at least ``operate``, whose
    signature verifies, for this pool, up to at least this generation."""
    if not data:
        return "unsigned"
    try:
        signed = TerminationSignature.decode(data)
    except TerminationFormatError as error:
        return str(error)
    operator = store.lookup(signed.key_id)
    if operator is None:
        return f"key {signed.key_id} is not trusted here"
    if not operator.role.allows(Role.OPERATE):
        return f"key {signed.key_id} may not end pools here"
    if signed.signer != operator.key.name or not operator.key.verify(
        signed.signature, signed.signed_bytes()
    ):
        return f"the signature of key {signed.key_id} does not verify"
    if signed.pool != pool or signed.generation < generation:
        return f"the signature ends pool {signed.pool} up to generation {signed.generation}"
    return None


def termination_check(trust: HostTrust) -> Callable[[object, str, int], str | None]:
    """The check a pool service applies to signed terminations (reads the store at each
    call: a reload counts at once)."""
    return lambda data, pool, generation: termination_refusal(data, pool, generation, trust.store)


def termination_signer(trust: HostTrust) -> Callable[[str, int, float], bytes] | None:
    """How this agent signs the terminations its API accepted; None without a signing key."""
    signer = trust.signer
    if signer is None:
        return None
    return lambda pool, generation, now: sign_termination(signer, pool, generation, now)
