"""What every part of the pool service shares: its error, its wire topics and timeouts, the
gossip it keeps per pool, and the leaf-operation events it tells observers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

RPC_TIMEOUT = 10.0
#: How long a host waits after a termination record before tearing down what is left, so the
#: shepherd's ordered termination (sfSyncTerminate, reverse order) goes first when it can.
TOMBSTONE_GRACE = 5.0
TOPIC_POOL = "pool"
TOPIC_TOMB = "tomb"


class PoolError(Exception):
    """A request about pools that cannot be done as asked (the API's 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LeafOp:
    """One of this host's leaf operations starting (``seconds`` is None) or finished: for
    live events and deploy-phase metrics, which watch the host without being the shepherd."""

    pool: str
    path: str
    op: str  # deploy, start, terminate
    state: str  # as status reports it: deploying, deployed, ..., failed
    kind: str
    sf_class: str
    domain: str
    seconds: float | None = None
    error: str | None = None


@dataclass
class KnownPool:
    """What this agent knows of a pool from gossip."""

    digest: str
    state: str
    shepherd: str
    seen: float
    generation: int = 0


def domain_name(pool: str, path: str, is_vm: bool) -> str:
    """The libvirt domain of a VM leaf (its name is a function of pool and path)."""
    from sdmesh.hypervisor.spec import domain_name_for

    return domain_name_for(pool, path) if is_vm else ""


def log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("pool task failed", exc_info=task.exception())
