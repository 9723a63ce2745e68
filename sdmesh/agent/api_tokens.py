"""API tokens: each has a name and a role, and the agent keeps only its SHA-256.

``sdmesh token create NAME --role R`` asks the agent (``POST /v1/tokens``, admin only) for a
new token; the secret is returned once and never stored: ``<state-dir>/api-tokens.json``
(0600, written through ``safeio``) holds name, role, digest and creation time. A fast hash is
enough because tokens are 256 random bits, not passwords: nobody can search that space
whatever the hash costs, and a slow one (scrypt) would only make every request slower. A
stolen file gives no token back, and revoking is removing the entry.

The token of ``api-token-file`` (the single token of earlier versions) keeps working as an
``admin`` token named ``api-token-file``; it lives in that file, not in the store.

``POST /v1/auth/proof`` lets a client check that it talks to the agent holding its token
before it sends the token (sdmesh/cli/agent_client.py): given the token's id (a hash of its
digest) and a nonce, the agent answers HMAC(digest, nonce, the address the client reached).
Only the agent knows the digest, so a process squatting the port cannot answer, and the
address ties the proof to this connection's endpoint: a squatter that relays the question to
the real agent elsewhere gets a proof for the wrong address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sdmesh.safeio import read_private, write_private
from sdmesh.trust.roles import Role

STORE_NAME = "api-tokens.json"
LEGACY_NAME = "api-token-file"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: Tokens a store holds at most: every one is checked on each request.
MAX_TOKENS = 1000
PROOF_CONTEXT = b"sdmesh-agent-proof\0"


class TokenError(ValueError):
    """A token request that cannot be done; ``status`` is its HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def digest(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token_digest: str) -> str:
    """A public handle on a token (for ``/v1/auth/proof``): it reveals neither the token nor
    the digest the proof is keyed with."""
    return hashlib.sha256(b"sdmesh-token-id\0" + token_digest.encode()).hexdigest()[:32]


def endpoint_label(address: object) -> str:
    """``host:port`` of a socket address (``[::1]:7948`` for IPv6), as both ends write it: an
    IPv4 address seen through a dual-stack socket (``::ffff:127.0.0.1``) is written as IPv4,
    and a scope (``%eth0``) is dropped, so the client's and the agent's views agree."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]).split("%", 1)[0], int(address[1])
        try:
            parsed = ipaddress.ip_address(host)
        except ValueError:
            return f"{host}:{port}"
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"
    return str(address)


def proof(token_digest: str, nonce: str, endpoint: str) -> str:
    """What the agent answers a proof request with (and the client expects)."""
    message = PROOF_CONTEXT + nonce.encode() + b"\0" + endpoint.encode()
    return hmac.new(bytes.fromhex(token_digest), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    created: float

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.label, "created": self.created}


class TokenStore:
    """The agent's tokens, by digest; persisted to ``path`` on every change."""

    def __init__(self, path: Path | None, legacy_token: str | None = None) -> None:
        self.path = path
        self._entries: dict[str, TokenEntry] = {}
        if legacy_token:
            entry = TokenEntry(LEGACY_NAME, Role.ADMIN, digest(legacy_token), 0.0)
            self._entries[entry.sha256] = entry
        if path is not None:
            for entry in _load(path):
                self._entries.setdefault(entry.sha256, entry)

    def __len__(self) -> int:
        return len(self._entries)

    def replace_with(self, fresh: TokenStore) -> None:
        """Take ``fresh``'s tokens (SIGHUP: the store file and ``api-token-file`` read
        again), so a token revoked by editing them, or a new ``api-token-file``, counts at
        once; the access guard keeps this object."""
        self._entries = dict(fresh._entries)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry of ``token``, or None. The digest of a 256-bit secret is compared, so
        the time a lookup takes says nothing useful about any stored token."""
        return self._entries.get(digest(token))

    def by_id(self, handle: str) -> TokenEntry | None:
        for entry in self._entries.values():
            if hmac.compare_digest(token_id(entry.sha256), handle):
                return entry
        return None

    def entries(self) -> list[TokenEntry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def create(self, name: str, role: Role) -> tuple[TokenEntry, str]:
        """A new token: its entry and the secret (returned once, never stored)."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise TokenError(
                "a token name is 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter "
                "or digit"
            )
        if name == LEGACY_NAME or any(e.name == name for e in self._entries.values()):
            raise TokenError(f"a token named {name!r} exists; revoke it first", 409)
        if len(self._entries) >= MAX_TOKENS:
            raise TokenError(f"this agent holds {MAX_TOKENS} tokens already; revoke some", 409)
        secret = secrets.token_urlsafe(32)
        entry = TokenEntry(name, role, digest(secret), round(time.time(), 3))
        self._commit({**self._entries, entry.sha256: entry})
        return entry, secret

    def revoke(self, name: str) -> TokenEntry:
        if name == LEGACY_NAME:
            raise TokenError(
                "the api-token-file token is revoked by removing api-token-file from the "
                "agent's configuration (then restart it)",
                409,
            )
        for key, entry in self._entries.items():
            if entry.name == name:
                self._commit({k: e for k, e in self._entries.items() if k != key})
                return entry
        raise TokenError("no token has that name ('sdmesh token list' lists them)", 404)

    def _commit(self, entries: dict[str, TokenEntry]) -> None:
        """Save ``entries``, then use them: a store that cannot be written changes nothing
        (OSError), so what the agent accepts is always what a restart will accept."""
        if self.path is not None:
            stored = [
                {**e.to_json(), "sha256": e.sha256}
                for e in sorted(entries.values(), key=lambda e: e.name)
                if e.name != LEGACY_NAME
            ]
            data = json.dumps({"version": 1, "tokens": stored}, indent=1).encode()
            write_private(self.path, data)
        self._entries = entries


def _load(path: Path) -> list[TokenEntry]:
    """The entries in ``path`` (none when it is missing); ValueError when it is damaged."""
    raw = read_private(path)
    if raw is None:
        return []
    try:
        data = json.loads(raw)
        entries = [
            TokenEntry(
                str(item["name"]),
                Role.parse(str(item["role"])),
                str(item["sha256"]),
                float(item.get("created", 0)),
            )
            for item in data["tokens"]
        ]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a token store; move it away to start afresh") from None
    if any(len(e.sha256) != 64 for e in entries):
        raise ValueError(f"{path} holds a malformed digest; move it away to start afresh")
    return entries


__all__ = [
    "LEGACY_NAME",
    "TokenEntry",
    "TokenError",
    "TokenStore",
    "digest",
    "endpoint_label",
    "proof",
    "token_id",
]
