"""Who may order a host, and what a refusal costs (issue 12, item 2): pure rules, fed with
the host's own membership view; the pool service applies them to each RPC.

* An **order** (deploy, start, stop, terminate of a leaf) is taken only from the member that
  names itself its shepherd, over a stream that comes from that member, and only if that
  member is one of the ``SHEPHERD_RANKS`` members closest to the pool in this host's view
  (members leaving included) or the shepherd this host already follows for the pool. The
  closest is the shepherd; the next ones cover the documented changes of shepherd this host
  may not have seen yet: a hand-over to the successor of a leaving shepherd, a takeover after
  a death this host has not yet heard of (up to ``SHEPHERD_RANKS - 1`` at once).
* A **submit** RPC makes this host a pool's shepherd only if its own view says it is.
* **Reports** and **inventories** are taken only from the host they speak for, a
  **hand-over** only from the member handing over.
* With host identities, **records** and **pool and tombstone rumors** are taken only with
  their writer's proof, and records only from a writer entitled to write them
  (sdmesh.pools.record_seal).

Refusals are counted by reason (``/metrics``: ``sdmesh_mesh_refusals_total``) and logged at
warning, at most once per reason per ``WARN_EVERY`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from sdmesh.pools.ownership import by_distance

log = logging.getLogger(__name__)

#: How many of the members closest to a pool (in this host's view) may order its hosts:
#: the shepherd, and the successors that take over when this host has not yet seen the
#: shepherd leave or die.
SHEPHERD_RANKS: Final = 3
#: Seconds between two warnings for the same refusal reason.
WARN_EVERY: Final = 60.0

#: Refusal reasons (the ``reason`` label of the counter).
GENERATION: Final = "generation"
NOT_SHEPHERD: Final = "order_not_from_shepherd"
WRONG_SENDER: Final = "wrong_sender"
SUBMIT_NOT_SHEPHERD: Final = "submit_not_shepherd"
TOMBSTONE: Final = "tombstone"
#: With host identities (sdmesh.pools.record_seal): a record in the DHT whose writer's proof
#: fails or whose writer may not write it, and a pool rumor without its writer's valid proof
#: (a tombstone's counts as ``tombstone``).
RECORD: Final = "record"
RUMOR: Final = "rumor"
REASONS: Final = (
    GENERATION,
    NOT_SHEPHERD,
    WRONG_SENDER,
    SUBMIT_NOT_SHEPHERD,
    TOMBSTONE,
    RECORD,
    RUMOR,
)

SentBy = Callable[[str], bool]
"""``sent_by(name)``: whether the request being handled comes from member ``name``."""


def entitled_shepherds(pool: str, members: Iterable[str], followed: str = "") -> set[str]:
    """The members whose orders for ``pool`` this host takes: the ``SHEPHERD_RANKS`` closest
    among ``members`` (its view, leaving members included), and ``followed``, the shepherd
    whose orders it already follows for the pool (if any)."""
    entitled = set(by_distance(pool, members)[:SHEPHERD_RANKS])
    if followed:
        entitled.add(followed)
    return entitled


def order_refusal(
    pool: str, shepherd: str, sent_by: SentBy | None, entitled: set[str]
) -> tuple[str, str] | None:
    """Why an order for ``pool`` naming ``shepherd`` is refused, as (reason, message), or
    None. ``sent_by`` None: the caller could not tell who sent it (local calls, tests)."""
    if sent_by is not None and not sent_by(shepherd):
        return WRONG_SENDER, f"an order naming {shepherd} as shepherd did not come from it"
    if shepherd not in entitled:
        return NOT_SHEPHERD, f"{shepherd} is not the shepherd of pool {pool} in this host's view"
    return None


def submit_refusal(pool: str, me: str, rightful: str | None) -> tuple[str, str] | None:
    """Why this host (``me``) does not shepherd a submitted pool: its view names another."""
    if rightful == me:
        return None
    return SUBMIT_NOT_SHEPHERD, f"{me} is not the shepherd of pool {pool} in its own view"


class MeshRefusals:
    """Requests from the mesh refused by these rules, counted by reason; each reason warns
    at most once per ``every`` seconds (a flood must not flood the log too)."""

    def __init__(
        self, every: float = WARN_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.counts: Counter[str] = Counter()
        self._every = every
        self._clock = clock
        self._warned: dict[str, float] = {}

    def refuse(self, reason: str, message: str) -> str:
        """Count and (rate-limited) log one refusal; the message, for the answer."""
        self.counts[reason] += 1
        now = self._clock()
        last = self._warned.get(reason)
        if last is None or now - last >= self._every:
            self._warned[reason] = now
            count = self.counts[reason]
            log.warning("refused a request from the mesh (%d so far): %s", count, message)
        return message

    def samples(self) -> list[tuple[str, int]]:
        """(reason, count) for every reason, zeros included (stable metric families)."""
        return [(reason, self.counts.get(reason, 0)) for reason in REASONS]
