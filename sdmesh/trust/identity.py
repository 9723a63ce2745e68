"""Host identities: a cluster CA, the certificates it signs, and the revocations it issues.

The cluster key (sdmesh/transport/keyring.py) says "this frame comes from someone inside the
mesh"; a host certificate says "the key that signed this is host ``b``'s". A certificate binds
a member name to an Ed25519 public key for a validity window, under a serial number, signed
by the cluster CA (an Ed25519 key of its own, created with ``sdmesh ca init``). A revocation
names a serial (and its host) and is signed by the same CA, so any member can check it
without asking anyone, and the mesh can gossip it (sdmesh/membership/identity.py).

Both are msgpack lists whose signature covers domain-separated bytes (``DOMAIN_CERT`` or
``DOMAIN_REVOKE`` followed by the msgpack of the other fields), as operator signatures do
(sdmesh/trust/signatures.py), so one kind of signature never passes for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from sdmesh.trust.keys import (
    KEY_BYTES,
    KEY_ID_HEX,
    OPERATOR_NAME,
    KeyFileError,
    OperatorKey,
    PublicKey,
    load_private_key,
    load_public_key,
    read_key_file,
)

DOMAIN_CERT: Final = b"sdmesh-host-cert-v1\x00"
DOMAIN_REVOKE: Final = b"sdmesh-host-revoke-v1\x00"
DOMAIN_ALIVE: Final = b"sdmesh-host-alive-v1\x00"
DOMAIN_LEAVE: Final = b"sdmesh-host-leave-v1\x00"
VERSION: Final = 1
SIGNATURE_BYTES: Final = 64
#: A certificate is about 150 bytes; anything much larger is not one.
MAX_CERT_BYTES: Final = 512
MAX_REVOCATION_BYTES: Final = 256
CERT_FILE_HEADER: Final = "# sdmesh host certificate"


class IdentityError(ValueError):
    """A certificate, revocation or identity file that cannot be used; says why."""


def _pack(obj: object) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def _unpack(data: object, limit: int, what: str) -> list[Any]:
    if not isinstance(data, bytes) or len(data) > limit:
        raise IdentityError(f"a {what} is at most {limit} bytes")
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several unrelated types
        raise IdentityError(f"the {what} is not msgpack") from None
    if not isinstance(obj, list):
        raise IdentityError(f"malformed {what}")
    return obj


def _typed(obj: list[Any], kinds: tuple[type, ...], what: str) -> None:
    if len(obj) != len(kinds) or not all(
        isinstance(v, k) and not isinstance(v, bool) for v, k in zip(obj, kinds, strict=True)
    ):
        raise IdentityError(f"malformed {what}")
    if obj[0] != VERSION:
        raise IdentityError(f"{what} version {obj[0]} is not supported")


@dataclass(frozen=True)
class HostCertificate:
    """The CA (key ``ca_key_id``) vouches that member ``name`` signs with ``public_key``
    from ``not_before`` to ``not_after`` (Unix seconds); ``serial`` names it for revocation."""

    name: str
    public_key: bytes
    not_before: int
    not_after: int
    serial: int
    ca_key_id: str
    signature: bytes

    def _fields(self) -> list[Any]:
        return [
            VERSION,
            self.name,
            self.public_key,
            self.not_before,
            self.not_after,
            self.serial,
            self.ca_key_id,
        ]

    def signed_bytes(self) -> bytes:
        return DOMAIN_CERT + _pack(self._fields())

    def encode(self) -> bytes:
        return _pack([*self._fields(), self.signature])

    @classmethod
    def decode(cls, data: object) -> HostCertificate:
        obj = _unpack(data, MAX_CERT_BYTES, "host certificate")
        _typed(obj, (int, str, bytes, int, int, int, str, bytes), "host certificate")
        _, name, key, not_before, not_after, serial, ca_key_id, signature = obj
        if not OPERATOR_NAME.fullmatch(name) or len(key) != KEY_BYTES:
            raise IdentityError("malformed name or key in the host certificate")
        if len(signature) != SIGNATURE_BYTES or len(ca_key_id) > KEY_ID_HEX:
            raise IdentityError("malformed signature in the host certificate")
        return cls(name, key, not_before, not_after, serial, ca_key_id, signature)

    @property
    def key(self) -> PublicKey:
        return PublicKey(self.name, self.public_key)

    def problem(self, ca: PublicKey, now: float) -> str | None:
        """Why this certificate is not valid under ``ca`` at ``now``, or None."""
        if self.ca_key_id != ca.key_id:
            return "signed by another CA"
        if not ca.verify(self.signature, self.signed_bytes()):
            return "bad CA signature"
        if now < self.not_before:
            return "not yet valid"
        if now >= self.not_after:
            return "expired"
        return None

    def file_text(self) -> str:
        return (
            f"{CERT_FILE_HEADER} of {self.name} (serial {self.serial}, key "
            f"{self.key.key_id}, valid {self.not_before}..{self.not_after} Unix time).\n"
            f'name = "{self.name}"\n'
            f'certificate = "{base64.b64encode(self.encode()).decode()}"\n'
        )


@dataclass(frozen=True)
class Revocation:
    """The CA revokes certificate ``serial`` (issued to ``name``) from ``revoked_at`` on."""

    serial: int
    name: str
    revoked_at: int
    ca_key_id: str
    signature: bytes

    def _fields(self) -> list[Any]:
        return [VERSION, self.serial, self.name, self.revoked_at, self.ca_key_id]

    def signed_bytes(self) -> bytes:
        return DOMAIN_REVOKE + _pack(self._fields())

    def encode(self) -> bytes:
        return _pack([*self._fields(), self.signature])

    @classmethod
    def decode(cls, data: object) -> Revocation:
        obj = _unpack(data, MAX_REVOCATION_BYTES, "revocation")
        _typed(obj, (int, int, str, int, str, bytes), "revocation")
        _, serial, name, revoked_at, ca_key_id, signature = obj
        if not OPERATOR_NAME.fullmatch(name) or len(signature) != SIGNATURE_BYTES:
            raise IdentityError("malformed revocation")
        if len(ca_key_id) > KEY_ID_HEX:
            raise IdentityError("malformed revocation")
        return cls(serial, name, revoked_at, ca_key_id, signature)

    def valid_under(self, ca: PublicKey) -> bool:
        return self.ca_key_id == ca.key_id and ca.verify(self.signature, self.signed_bytes())


def sign_certificate(
    ca: OperatorKey, name: str, public: PublicKey, serial: int, not_before: int, not_after: int
) -> HostCertificate:
    if not OPERATOR_NAME.fullmatch(name):
        raise IdentityError(f"bad host name {name!r}: use a-z, 0-9, '.', '_', '-'")
    if not_after <= not_before:
        raise IdentityError("a certificate must be valid for some time")
    unsigned = HostCertificate(
        name, public.raw, not_before, not_after, serial, ca.public.key_id, b"\0" * 64
    )
    return HostCertificate(
        name,
        public.raw,
        not_before,
        not_after,
        serial,
        ca.public.key_id,
        ca.sign(unsigned.signed_bytes()),
    )


def sign_revocation(ca: OperatorKey, serial: int, name: str, revoked_at: int) -> Revocation:
    unsigned = Revocation(serial, name, revoked_at, ca.public.key_id, b"")
    return Revocation(serial, name, revoked_at, ca.public.key_id, ca.sign(unsigned.signed_bytes()))


def alive_bytes(name: str, incarnation: int, host: str, port: int, meta_digest: bytes) -> bytes:
    """What a member signs to say it is alive at ``incarnation`` at that address with that
    metadata (by digest: the metadata itself is already in the message)."""
    return DOMAIN_ALIVE + _pack([name, incarnation, host, port, meta_digest])


def leave_bytes(name: str, incarnation: int) -> bytes:
    return DOMAIN_LEAVE + _pack([name, incarnation])


def meta_digest(meta: dict[str, Any]) -> bytes:
    """Digest of metadata as the wire carries it (msgpack keeps the map's order, and the
    receiver digests the map it decoded, in the order it arrived)."""
    return hashlib.sha256(_pack(meta)).digest()[:16]


# ---------------------------------------------------------------------- files


def load_certificate(path: Path) -> HostCertificate:
    """A certificate file (``name`` and base64 ``certificate``); IdentityError otherwise."""
    import tomllib

    try:
        data = read_key_file(path, private=False)
        doc = tomllib.loads(data.decode())
        text = doc["certificate"]
        if not isinstance(text, str):
            raise KeyError("certificate")
        return HostCertificate.decode(base64.b64decode(text, validate=True))
    except KeyFileError as error:
        raise IdentityError(str(error)) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, binascii.Error):
        raise IdentityError(f"{path}: not a host certificate file") from None
    except IdentityError as error:
        raise IdentityError(f"{path}: {error}") from None


def load_revocations(path: Path) -> list[Revocation]:
    """A revocation list file: one base64 revocation per line, ``#`` comments. A missing
    file is an empty list; a malformed line is an error (a CRL must not half-load)."""
    if not path.exists():
        return []
    try:
        data = read_key_file(path, private=False)
    except KeyFileError as error:
        raise IdentityError(str(error)) from None
    found: list[Revocation] = []
    for number, line in enumerate(data.decode(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(Revocation.decode(base64.b64decode(line, validate=True)))
        except (IdentityError, binascii.Error, ValueError):
            raise IdentityError(f"{path}:{number}: not a revocation") from None
    return found


def revocation_line(revocation: Revocation) -> str:
    return base64.b64encode(revocation.encode()).decode() + "\n"


@dataclass(frozen=True)
class HostIdentity:
    """What one agent holds: the CA's public key, its own key and certificate, the CRL."""

    ca: PublicKey
    key: OperatorKey
    certificate: HostCertificate
    revocations: tuple[Revocation, ...] = ()

    @classmethod
    def load(
        cls, ca_file: Path, key_file: Path, cert_file: Path, crl_file: Path | None, now: float
    ) -> HostIdentity:
        """Load and cross-check the files; IdentityError naming the problem (the agent then
        refuses to start, or a reload keeps the old identity)."""
        try:
            ca = load_public_key(ca_file)
            key = load_private_key(key_file)
        except KeyFileError as error:
            raise IdentityError(str(error)) from None
        cert = load_certificate(cert_file)
        problem = cert.problem(ca, now)
        if problem is not None:
            raise IdentityError(f"{cert_file}: {problem}")
        if cert.public_key != key.public.raw:
            raise IdentityError(f"{cert_file}: certifies another key than {key_file}")
        revoked = tuple(load_revocations(crl_file)) if crl_file is not None else ()
        for revocation in revoked:
            if not revocation.valid_under(ca):
                raise IdentityError(f"{crl_file}: a revocation is not signed by the CA")
        return cls(ca, key, cert, revoked)
