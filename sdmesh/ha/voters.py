"""Who votes on leases, remembered across restarts (pure; the lease service persists it).

The membership view alone is the wrong voter set twice over: an agent that just started
sees only itself until its join completes (a majority of one), and the view forgets a dead
member after ``dead_reap_after`` (a day), which would let a minority cut off that long
become a majority. So the voters are every member this host has known, from the saved set
and the live view, and they shrink only when a member *leaves* (gracefully, or forced out
by an operator): never when it is reaped, never because a restart forgot it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sdmesh.membership import Member, State

VOTERS_FILE = "lease-voters.json"


@dataclass(frozen=True, slots=True)
class Voters:
    names: frozenset[str]
    solo: bool
    """A mesh of one: this host may grant itself a lease (nobody else could run its VMs)."""


class VoterSet:
    """This host's voters. ``saved``: the set written before a restart (None: never written).
    ``peers_configured``: whether the agent joins a mesh (then it is never alone before it
    has heard from the mesh, whatever the saved set says)."""

    def __init__(self, name: str, saved: frozenset[str] | None, peers_configured: bool) -> None:
        self.name = name
        self._names = (saved or frozenset()) | {name}
        # Alone by history (everyone else left, and that was written down) or by design (a
        # host with no peers and no record of any).
        self._solo = self._names == {name} and (saved is not None or not peers_configured)

    @property
    def current(self) -> Voters:
        return Voters(self._names, self._solo and self._names == {self.name})

    def update(self, members: Iterable[Member]) -> bool:
        """Fold in the membership view; True if the voters changed (write them down)."""
        names = set(self._names)
        for member in members:
            if member.name == self.name:
                continue
            if member.state is State.LEFT:
                if member.name in names:
                    names.discard(member.name)
                    self._solo = True  # shrunk by leaves: a last host stays a mesh of one
            else:
                names.add(member.name)
        fresh = frozenset(names)
        if fresh == self._names:
            return False
        self._names = fresh
        return True

    def worth_saving(self) -> bool:
        """Never write a lone set that is no mesh of one: the next start would believe it."""
        return self._names != {self.name} or self.current.solo


def encode_voters(voters: Voters) -> bytes:
    return json.dumps({"voters": sorted(voters.names)}).encode()


def decode_voters(data: bytes | None) -> frozenset[str] | None:
    """The saved voter names; None when nothing (readable) was saved."""
    if data is None:
        return None
    try:
        raw = json.loads(data)
        names = raw["voters"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        return frozenset(names)
    except (ValueError, KeyError, TypeError):
        return None
