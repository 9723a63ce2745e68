"""DHT tunables, with the paper's values where it gives them."""

from __future__ import annotations

import dataclasses

from sdmesh.dht.eviction import DEFAULT_MAX_FAILURES, DEFAULT_RETRY_AFTER
from sdmesh.dht.records import MAX_RECORD_SIZE
from sdmesh.dht.rtt import RttConfig
from sdmesh.dht.storage import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, DEFAULT_TTL

DEFAULT_MAX_DATAGRAM = 48 * 1024
"""Room for the largest record plus k contacts in one find_value answer. Above the Ethernet
MTU, so big records travel as IP fragments; fine on a LAN, and small records stay small."""


@dataclasses.dataclass(frozen=True)
class DhtConfig:
    ksize: int = 20
    """Replication factor and bucket size (k in the paper)."""
    alpha: int = 3
    """Requests a lookup keeps in flight."""
    max_failures: int = DEFAULT_MAX_FAILURES
    """Consecutive failures before a contact is stale and may be replaced."""
    stale_retry_after: float = DEFAULT_RETRY_AFTER
    """Seconds a stale contact is left out of lookups before one request probes it again."""
    rtt: RttConfig = dataclasses.field(default_factory=RttConfig)
    record_ttl: float = DEFAULT_TTL
    """A record nobody stored again for this long is dropped (the paper's 24 h)."""
    republish_interval: float = 3600.0
    """Holders push their records to the current k closest this often (the paper's hour)."""
    refresh_interval: float = 3600.0
    """A bucket with no lookup in its range for this long is refreshed."""
    maintenance_interval: float = 60.0
    """How often expiry, refresh and republish are checked."""
    max_records: int = DEFAULT_MAX_RECORDS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_datagram: int = DEFAULT_MAX_DATAGRAM
    max_handovers: int = 32
    """Concurrent stores sent when welcoming new nodes or repairing replicas."""

    def __post_init__(self) -> None:
        if self.ksize < 1 or self.alpha < 1 or self.max_failures < 1:
            raise ValueError("ksize, alpha and max_failures must be positive")
        if self.max_datagram < MAX_RECORD_SIZE + 2048:
            raise ValueError(f"max_datagram must leave room for a {MAX_RECORD_SIZE}-byte record")
        for name in ("record_ttl", "republish_interval", "refresh_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.maintenance_interval <= 0:
            raise ValueError("maintenance_interval must be positive")
