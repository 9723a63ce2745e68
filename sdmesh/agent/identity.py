"""The agent's side of host identities and live reload (issue 12, items 1 and 5).

* ``open_identity``: the identity checker the membership core consults, from the files the
  configuration names (none configured: None, and the mesh trusts every cluster-key holder as
  before).
* ``Reloader``: what SIGHUP (and systemd's ``ExecReload=``) runs. Each part of the agent that
  reads files at start registers a ``reload()`` here; one that fails keeps its previous state,
  is logged, and never stops the others or the agent.
* ``refuse_loose_key_file``: a cluster key file that group or others may read or write is
  refused, at start and at every reload (ssh refuses a loose identity file the same way).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdmesh.agent.config import AgentConfig
from sdmesh.membership import Meta, MetaUpdated, Revoke
from sdmesh.membership.events import Event
from sdmesh.membership.identity import REVOKE_TOPIC, IdentityChecker
from sdmesh.membership.messages import Rumor
from sdmesh.safeio import read_private, write_private
from sdmesh.transport import KeyringError, TransportSecurity
from sdmesh.trust.identity import (
    HostIdentity,
    IdentityError,
    Revocation,
    load_revocations,
    revocation_line,
)
from sdmesh.trust.keys import loose_mode

log = logging.getLogger(__name__)

LEARNED_CRL = "learned.crl"

ReloadFunction = Callable[[], list[str] | None]
"""Re-read some files; returns problems to report (None or [] when all went well), raises
to say the reload failed as a whole (the part keeps what it had)."""


class Reloader:
    """Named reload functions, run in registration order."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, ReloadFunction]] = []

    def register(self, name: str, reload: ReloadFunction) -> None:
        self._parts.append((name, reload))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._parts]

    def reload(self) -> dict[str, list[str]]:
        """Run every part; its problems by name (empty list: reloaded cleanly)."""
        report: dict[str, list[str]] = {}
        for name, reload in self._parts:
            try:
                problems = list(reload() or [])
            except Exception as error:  # one bad file must not stop the others or the agent
                problems = [f"not reloaded, kept the previous state: {error}"]
            for problem in problems:
                log.warning("reload %s: %s", name, problem)
            report[name] = problems
        return report


def summary(report: dict[str, list[str]]) -> str:
    """One line for the log: each part, ok or with problems."""
    return ", ".join(f"{n} ({'ok' if not p else 'problems'})" for n, p in report.items())


@dataclass(frozen=True)
class IdentityFiles:
    ca: Path
    key: Path
    cert: Path
    crl: Path | None
    learned: Path
    """Revocations this agent learned by gossip, kept across restarts."""


def identity_files(config: AgentConfig) -> IdentityFiles | None:
    """The files host identities use, or None when no CA is configured."""
    if not config.identity_ca:
        return None
    base = config.state_dir / "identity"
    return IdentityFiles(
        Path(config.identity_ca),
        Path(config.identity_key) if config.identity_key else base / "host.key",
        Path(config.identity_cert) if config.identity_cert else base / "host.cert",
        Path(config.identity_crl) if config.identity_crl else None,
        base / LEARNED_CRL,
    )


def open_identity(
    config: AgentConfig, wall: Callable[[], float] = time.time
) -> IdentityChecker | None:
    """The checker for this host, or None without a CA; IdentityError (the agent refuses to
    start) for a configured identity that cannot be used, or one named otherwise than the
    agent."""
    files = identity_files(config)
    if files is None:
        return None
    identity = HostIdentity.load(files.ca, files.key, files.cert, files.crl, wall())
    if identity.certificate.name != config.name:
        raise IdentityError(
            f"{files.cert}: certifies host {identity.certificate.name!r}, "
            f"but this agent is named {config.name!r}"
        )
    return IdentityChecker(
        identity.ca,
        identity.key,
        identity.certificate,
        (*identity.revocations, *_learned(files.learned)),
        wall,
    )


def _learned(path: Path) -> list[Revocation]:
    """Revocations kept from gossip; an unreadable file is logged, not fatal (the CA's own
    list and the mesh's rumors still carry them)."""
    try:
        return load_revocations(path)
    except IdentityError as error:
        log.warning("ignoring learned revocations: %s", error)
        return []


def keep_learned_revocations(config: AgentConfig) -> Callable[[Rumor], None]:
    """A rumor listener that appends each revocation the core took (it checked the CA's
    signature first) to ``STATE_DIR/identity/learned.crl``, so a restart still knows it
    after the rumor expired from the mesh."""
    files = identity_files(config)
    assert files is not None
    path = files.learned

    def keep(rumor: Rumor) -> None:
        if rumor.topic != REVOKE_TOPIC:
            return
        try:
            revocation = Revocation.decode(rumor.payload)
            known = {r.serial for r in load_revocations(path)}
        except IdentityError as error:
            log.warning("cannot keep revocation: %s", error)
            return
        if revocation.serial in known:
            return
        old = read_private(path) or b""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(path, old + revocation_line(revocation).encode(), 0o644)
        except OSError as error:
            log.warning("cannot keep revocation in %s: %s", path, error.strerror)

    return keep


def identity_reload(
    config: AgentConfig,
    checker: IdentityChecker,
    feed: Callable[[Event], None],
    current_meta: Callable[[], Meta],
    wall: Callable[[], float] = time.time,
) -> ReloadFunction:
    """Re-read CA, key, certificate (a renewal) and revocation list; each new revocation is
    fed to the core, which drops the member and gossips it. A new key or certificate is
    announced at once (a new incarnation, signed with it), not at the next update."""

    def reload() -> list[str]:
        files = identity_files(config)
        assert files is not None
        identity = HostIdentity.load(files.ca, files.key, files.cert, files.crl, wall())
        if identity.certificate.name != config.name:
            raise IdentityError(f"{files.cert}: certifies another host")
        renewed = identity.certificate.encode() != checker.certificate.encode()
        checker.replace(identity.ca, identity.key, identity.certificate)
        if renewed:
            feed(MetaUpdated(dict(current_meta())))
        for revocation in (*identity.revocations, *_learned(files.learned)):
            feed(Revoke(revocation))
        return []

    return reload


def reseal_on_renewal(checker: IdentityChecker, reseal: Callable[[], None]) -> ReloadFunction:
    """A reload part, registered after ``identity_reload``: when the host's certificate
    changed (a renewal picked up by SIGHUP), store again the records of the pools shepherded
    here, sealed under the new one (``PoolService.reseal_records``), rather than wait up to
    ``ANNOUNCE_PERIOD`` while their proofs rest on the old certificate."""
    sealed_under = [checker.certificate.encode()]

    def reload() -> list[str]:
        current = checker.certificate.encode()
        if current != sealed_under[0]:
            sealed_under[0] = current
            reseal()
        return []

    return reload


def refuse_loose_key_file(path: str | os.PathLike[str] | None) -> None:
    """KeyringError when the cluster key file may be read or written by group or others, is
    a symbolic link, or belongs to another user than root or this one."""
    if path is None:
        return
    try:
        info = os.lstat(path)
    except OSError as error:
        raise KeyringError(f"{os.fspath(path)}: error: {error.strerror}") from None
    if os.path.islink(path):
        raise KeyringError(f"{os.fspath(path)}: error: is a symbolic link; give the file itself")
    problem = loose_mode(info, readable=True)
    if problem is not None:
        raise KeyringError(
            f"{os.fspath(path)}: error: refused, {problem}; run `chmod 600 {os.fspath(path)}`"
        )


def keyring_reload(security: TransportSecurity) -> ReloadFunction:
    """Re-read the cluster key file into the shared ring (a rotation step done by copying
    files); a loose or bad file keeps the current keys."""

    def reload() -> list[str]:
        if security.keyring is None or security.key_file is None:
            return []
        refuse_loose_key_file(security.key_file)
        try:
            security.reload()
        except KeyringError as error:
            raise KeyringError(error.message) from None
        return []

    return reload
