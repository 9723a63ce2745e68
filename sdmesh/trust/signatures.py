"""The signature envelope an operator puts on a resolved descriptor.

It binds a pool name to the digest of its resolved descriptor (``PoolSpec.digest``), names
its signer by key id and name, says when it was signed and which role the signer exercises
(the least that the descriptor's components need: an admin submitting VMs signs as
``operate``, so the signature cannot be stretched to anything more). What is signed is
domain-separated canonical bytes, ``b"sdmesh-descriptor-v1\\0"`` followed by the msgpack of a
fixed list, so a signature made for anything else (another protocol, another version) never
verifies here.

On the wire (records, orders) the envelope is msgpack bytes; in the API's JSON it is their
base64 (:meth:`DescriptorSignature.to_text`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from sdmesh.trust.keys import KEY_ID_HEX, OPERATOR_NAME, OperatorKey
from sdmesh.trust.roles import Role

DOMAIN: Final = b"sdmesh-descriptor-v1\x00"
ENVELOPE_VERSION: Final = 1
SIGNATURE_BYTES: Final = 64
DIGEST_HEX: Final = 64  # a SHA-256, as PoolSpec.digest
#: A well-formed envelope is about 250 bytes; anything much larger is not one.
MAX_ENVELOPE_BYTES: Final = 1024
_HEX = frozenset("0123456789abcdef")


class SignatureFormatError(ValueError):
    """Bytes or text that are not a well-formed signature envelope."""


@dataclass(frozen=True)
class DescriptorSignature:
    """``signer`` (key ``key_id``) vouches, at ``signed_at``, that pool ``pool`` runs the
    descriptor of digest ``digest``, with at most the rights of ``role``."""

    pool: str
    digest: str
    key_id: str
    signer: str
    signed_at: int  # Unix seconds
    role: Role
    signature: bytes

    def signed_bytes(self) -> bytes:
        return signed_bytes(
            self.pool, self.digest, self.key_id, self.signer, self.signed_at, self.role
        )

    def encode(self) -> bytes:
        body = [
            ENVELOPE_VERSION,
            self.pool,
            self.digest,
            self.key_id,
            self.signer,
            self.signed_at,
            self.role.label,
            self.signature,
        ]
        return bytes(msgpack.packb(body, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> DescriptorSignature:
        if not isinstance(data, bytes) or len(data) > MAX_ENVELOPE_BYTES:
            raise SignatureFormatError("a signature envelope is at most 1 KiB of bytes")
        try:
            obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception:  # msgpack raises several unrelated types
            raise SignatureFormatError("the signature envelope is not msgpack") from None
        kinds = (int, str, str, str, str, int, str, bytes)
        if not isinstance(obj, list) or len(obj) != len(kinds):
            raise SignatureFormatError("malformed signature envelope")
        if not all(
            isinstance(v, k) and not isinstance(v, bool) for v, k in zip(obj, kinds, strict=True)
        ):
            raise SignatureFormatError("malformed signature envelope")
        if obj[0] != ENVELOPE_VERSION:
            raise SignatureFormatError(f"signature envelope version {obj[0]} is not supported")
        _, pool, digest, key_id, signer, signed_at, role_label, signature = obj
        # Names as pool ids and operator names are spelled: nothing else ever reaches a
        # message, a log line or an event from an envelope.
        if not OPERATOR_NAME.fullmatch(pool) or not OPERATOR_NAME.fullmatch(signer):
            raise SignatureFormatError("malformed pool or signer name in the signature envelope")
        if len(digest) != DIGEST_HEX or not set(digest) <= _HEX:
            raise SignatureFormatError("malformed digest in the signature envelope")
        if len(key_id) != KEY_ID_HEX or not set(key_id) <= _HEX:
            raise SignatureFormatError("malformed key id in the signature envelope")
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureFormatError("malformed signature in the signature envelope")
        try:
            role = Role.parse(role_label)
        except ValueError:
            raise SignatureFormatError("unknown role in the signature envelope") from None
        return cls(pool, digest, key_id, signer, signed_at, role, signature)

    def to_text(self) -> str:
        return base64.b64encode(self.encode()).decode()

    @classmethod
    def from_text(cls, text: object) -> DescriptorSignature:
        """From the API's JSON: a base64 string of the envelope."""
        if not isinstance(text, str) or len(text) > MAX_ENVELOPE_BYTES * 2:
            raise SignatureFormatError("'signature' must be the base64 of a signature envelope")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureFormatError("'signature' is not base64") from None
        return cls.decode(data)


def signed_bytes(
    pool: str, digest: str, key_id: str, signer: str, signed_at: int, role: Role
) -> bytes:
    """The canonical, domain-separated bytes a signature covers."""
    body = [pool, digest, key_id, signer, signed_at, role.label]
    return DOMAIN + bytes(msgpack.packb(body, use_bin_type=True))


def sign_descriptor(
    key: OperatorKey, pool: str, digest: str, role: Role, now: float
) -> DescriptorSignature:
    """``key``'s signature on pool ``pool`` running descriptor ``digest`` as ``role``."""
    public = key.public
    signed_at = int(now)
    message = signed_bytes(pool, digest, public.key_id, key.name, signed_at, role)
    return DescriptorSignature(
        pool, digest, public.key_id, key.name, signed_at, role, key.sign(message)
    )
