"""Rotating the cluster key across a running mesh, as ``consul keyring`` does.

Three steps, each done everywhere before the next: *install* a new key (every member opens
it), *use* it (every member seals with it), *remove* the old one (nobody opens it any more).
An operator runs each step once, against one agent (``sdmesh keygen --add|--use|--remove
--agent URL``): that agent's admin-only API route applies the step to its own ring, then
sends it to every live member over the gossip port's sealed stream, and answers with each
member's outcome. Each member applies it to its in-memory ring (shared by all its codecs, so
it takes effect at once) and rewrites its key file (mode 0600), so a restart keeps it.

Why over the mesh rather than from the CLI to every agent's API: APIs listen on loopback by
default, and the mesh already reaches every member. Why that is safe enough: an instruction
travels sealed by the current primary key; with host identities configured it is also
signed by the sending member's host key (certificate attached), and a member refuses one
that is not signed by a valid, unrevoked member, older than ``MAX_AGE`` seconds, or already
applied (replay). The new key is readable by whoever holds the *current* key and records
the traffic: after a key leak, copy the new key file to the hosts out of band instead and
send SIGHUP (``systemctl reload sdmesh``), which re-reads it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from sdmesh.finite import finite_number
from sdmesh.membership.identity import IdentityChecker
from sdmesh.transport import KeyringError, TransportSecurity
from sdmesh.transport.keyring import KEY_ID_SIZE, KEY_SIZE, key_id, write_key_file

log = logging.getLogger(__name__)

DOMAIN: Final = b"sdmesh-keyring-v1\x00"
OPS: Final = ("install", "use", "remove")
#: An instruction older (or further in the future) than this is refused: replays.
MAX_AGE: Final = 120.0
#: Instructions remembered as applied (replay protection within MAX_AGE).
MAX_SEEN: Final = 4096


class InstructionError(ValueError):
    """A keyring instruction that is malformed, unauthorized or cannot be applied."""


@dataclass(frozen=True)
class KeyringInstruction:
    op: str
    key: bytes
    """The key for ``install``; its 4-byte id for ``use`` and ``remove``."""
    origin: str
    issued_at: float
    proof: bytes = b""

    def signed_bytes(self) -> bytes:
        fields = [self.op, self.key, self.origin, self.issued_at]
        return DOMAIN + bytes(msgpack.packb(fields, use_bin_type=True))

    def to_wire(self) -> dict[str, Any]:
        return {
            "rpc": "keyring",
            "op": self.op,
            "key": self.key,
            "origin": self.origin,
            "at": self.issued_at,
            "proof": self.proof,
        }

    @classmethod
    def from_wire(cls, request: dict[str, Any]) -> KeyringInstruction:
        op, key, origin = request.get("op"), request.get("key"), request.get("origin")
        at, proof = request.get("at"), request.get("proof", b"")
        if op not in OPS or not isinstance(key, bytes) or not isinstance(origin, str):
            raise InstructionError("malformed keyring instruction")
        if len(key) != (KEY_SIZE if op == "install" else KEY_ID_SIZE) or len(origin) > 128:
            raise InstructionError("malformed keyring instruction")
        if not isinstance(at, float) or not isinstance(proof, bytes) or len(proof) > 512:
            raise InstructionError("malformed keyring instruction")
        if finite_number(at) is None:  # NaN is never too old, and never equal: no replay check
            raise InstructionError("malformed keyring instruction: 'at' is not a finite time")
        return cls(op, key, origin, at, proof)

    @property
    def described(self) -> str:
        shown = key_id(self.key).hex() if self.op == "install" else self.key.hex()
        return f"{self.op} {shown}"


def parse_request(body: object) -> tuple[str, bytes]:
    """``{"op": "install", "key": BASE64}`` or ``{"op": "use"|"remove", "key_id": HEX}``
    from the API; InstructionError with a message for the caller."""
    if not isinstance(body, dict) or body.get("op") not in OPS:
        raise InstructionError("'op' must be one of install, use, remove")
    op = str(body["op"])
    if op == "install":
        text = body.get("key")
        try:
            key = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_SIZE:
            raise InstructionError("'key' must be the base64 of a 32-byte key")
        return op, key
    text = body.get("key_id")
    try:
        kid = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        kid = b""
    if len(kid) != KEY_ID_SIZE:
        raise InstructionError(f"'key_id' must be {2 * KEY_ID_SIZE} hex digits")
    return op, kid


class KeyringAdmin:
    """One agent's keyring: applies instructions, makes and checks them."""

    def __init__(
        self, name: str, security: TransportSecurity, identity: IdentityChecker | None
    ) -> None:
        self.name = name
        self.security = security
        self.identity = identity
        self.refused = 0
        self._seen: dict[tuple[str, float, str, bytes], None] = {}

    def describe(self) -> dict[str, Any]:
        ring = self.security.keyring
        if ring is None:
            return {"insecure": True, "keys": [], "primary": None}
        return {
            "insecure": False,
            "keys": [key_id(k).hex() for k in ring],
            "primary": ring.primary_id.hex(),
        }

    def make(self, op: str, key: bytes, wall: float | None = None) -> KeyringInstruction:
        """An instruction from this agent, signed with its host key when it has one."""
        unsigned = KeyringInstruction(op, key, self.name, time.time() if wall is None else wall)
        if self.identity is None:
            return unsigned
        proof = self.identity.prove(unsigned.signed_bytes())
        return KeyringInstruction(op, key, self.name, unsigned.issued_at, proof)

    def accept(self, instruction: KeyringInstruction, wall: float | None = None) -> str:
        """Check an instruction from another member, then apply it; InstructionError (counted)
        when refused."""
        now = time.time() if wall is None else wall
        if abs(now - instruction.issued_at) > MAX_AGE:
            self.refused += 1
            raise InstructionError("keyring instruction too old or from the future")
        seen = (instruction.origin, instruction.issued_at, instruction.op, instruction.key)
        if seen in self._seen:
            self.refused += 1
            raise InstructionError("keyring instruction already applied (replay)")
        if self.identity is not None and not self.identity.check_signed(
            instruction.origin, instruction.signed_bytes(), instruction.proof
        ):
            self.refused += 1
            raise InstructionError("keyring instruction not signed by a valid member")
        if len(self._seen) >= MAX_SEEN:
            self._seen.clear()
        self._seen[seen] = None
        return self.apply(instruction)

    def apply(self, instruction: KeyringInstruction) -> str:
        """Change the ring and persist it; what was done, or InstructionError."""
        ring = self.security.keyring
        if ring is None:
            raise InstructionError("this agent runs --insecure: it has no key ring")
        if instruction.op == "remove" and ring.find(instruction.key) is None:
            return f"{instruction.described}: done (was not installed)"
        try:
            if instruction.op == "install":
                ring.install(instruction.key)
            elif instruction.op == "use":
                ring.use(instruction.key)
            else:
                ring.remove(instruction.key)
        except KeyringError as error:
            raise InstructionError(error.message) from None
        if self.security.key_file is not None:
            try:
                write_key_file(self.security.key_file, ring.to_text(), overwrite=True)
            except OSError as error:
                log.error("keyring: %s applied but not saved: %s", instruction.described, error)
                return f"{instruction.described}: applied, NOT saved ({error.strerror})"
        log.warning("keyring: %s (from %s)", instruction.described, instruction.origin)
        return f"{instruction.described}: done"
