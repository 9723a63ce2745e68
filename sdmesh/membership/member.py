"""What a member is: a name, an address, an incarnation, a state and its metadata."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]
"""A UDP/TCP endpoint ``(host, port)``; the same port serves datagrams and push-pull streams."""

Meta = dict[str, Any]
"""Gossiped metadata: msgpack-friendly values only (capacity, uri_type, labels, images, api)."""


class State(enum.Enum):
    """SWIM member states; ``LEFT`` is a graceful departure and is never suspected."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def live(self) -> bool:
        """Alive or suspect: still probed and gossiped to."""
        return self is State.ALIVE or self is State.SUSPECT


@dataclass(frozen=True, slots=True)
class Member:
    """An immutable snapshot of one member as some node sees it.

    ``incarnation`` orders claims about the member: only the member itself raises it (to refute
    a suspicion, to announce new metadata or a new address, or to leave), so a higher number
    always carries newer news (SWIM, Das et al. 2002, section 4.2).
    Treat ``meta`` as read-only: snapshots share it with the core.
    """

    name: str
    addr: Address
    incarnation: int = 0
    state: State = State.ALIVE
    meta: Meta = field(default_factory=dict)
    proof: bytes = b""
    """The member's own signed word for this state (empty without a CA), carried in
    push-pull so identities travel with full state (sdmesh/membership/identity.py)."""
