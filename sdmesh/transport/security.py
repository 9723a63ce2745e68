"""How a node secures its transport: a key ring from a key file, or explicitly none.

One :class:`TransportSecurity` per agent; each driver asks it for its own codec (its own
sender session and replay table) while all codecs share the one mutable key ring, so a
reloaded key file takes effect everywhere at once.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sdmesh.transport.drops import DropCounters
from sdmesh.transport.keyring import Keyring, KeyringError
from sdmesh.transport.replay import DEFAULT_MAX_SENDERS, DEFAULT_WINDOW
from sdmesh.transport.seal import DEFAULT_MAX_CLOCK_SKEW, FrameCodec, InsecureCodec, SealedCodec

NO_KEY_MESSAGE = (
    "error: no cluster key: pass --key-file FILE (create one with `sdmesh keygen FILE` and "
    "copy it to every host), or --insecure to run without encryption or authentication"
)


@dataclasses.dataclass
class TransportSecurity:
    """Key ring (``None`` means ``--insecure``) plus the settings every codec shares."""

    keyring: Keyring | None
    cluster: str = ""
    key_file: Path | None = None
    max_clock_skew: float | None = DEFAULT_MAX_CLOCK_SKEW
    replay_window: int = DEFAULT_WINDOW
    max_senders: int = DEFAULT_MAX_SENDERS

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], *, cluster: str = "") -> TransportSecurity:
        """Raises :class:`KeyringError` (with a printable ``.message``) for a bad file."""
        return cls(Keyring.load(path), cluster=cluster, key_file=Path(path))

    @classmethod
    def insecure(cls) -> TransportSecurity:
        return cls(None)

    @property
    def is_insecure(self) -> bool:
        return self.keyring is None

    def new_codec(
        self,
        *,
        max_frame: int,
        counters: DropCounters | None = None,
        identity: str | bytes = "",
    ) -> FrameCodec:
        """A codec with a fresh sender session; one per driver, never shared between them.

        ``identity`` names the endpoint in frame headers (the member name for gossip, the node
        id for the DHT): frames addressed to another identity are dropped as ``misdirected``.
        """
        if self.keyring is None:
            return InsecureCodec(max_frame=max_frame, counters=counters)
        return SealedCodec(
            self.keyring,
            max_frame=max_frame,
            cluster=self.cluster,
            max_clock_skew=self.max_clock_skew,
            replay_window=self.replay_window,
            max_senders=self.max_senders,
            counters=counters,
            identity=identity,
        )

    def reload(self) -> None:
        """Re-read the key file into the shared ring (e.g. on SIGHUP during a rotation).

        On a bad file raises :class:`KeyringError` and keeps the current keys.
        """
        if self.keyring is None or self.key_file is None:
            raise KeyringError("error: no key file to reload")
        self.keyring.replace(Keyring.load(self.key_file))


def load_security(
    key_file: str | os.PathLike[str] | None, *, insecure: bool, cluster: str = ""
) -> TransportSecurity:
    """Policy for ``sdmesh join``: a key file is required unless ``--insecure`` is explicit.

    Raises :class:`KeyringError`; print its ``.message`` and exit 2.
    """
    if insecure and key_file is not None:
        raise KeyringError("error: --insecure and --key-file are mutually exclusive")
    if insecure:
        return TransportSecurity.insecure()
    if key_file is None:
        raise KeyringError(NO_KEY_MESSAGE)
    return TransportSecurity.from_key_file(key_file, cluster=cluster)
