"""What the DHT did, as plain counters for logs and, later, ``/metrics``."""

from __future__ import annotations

import dataclasses

from sdmesh.transport import DropCounters


@dataclasses.dataclass
class DhtCounters:
    """RPC traffic and outcomes; ``drops`` are frames the transport codec refused."""

    requests_sent: int = 0
    responses_received: int = 0
    requests_received: int = 0
    responses_sent: int = 0
    timeouts: int = 0
    late_responses: int = 0
    """Replies after their timeout: still RTT samples, but the caller had moved on."""
    unexpected_responses: int = 0
    """Replies to no request of ours, or from another address than the one asked."""
    identity_mismatches: int = 0
    """A contact's address answered with another node id (the node there restarted)."""
    malformed: int = 0
    """Authenticated messages that are not valid DHT calls or replies."""
    send_errors: int = 0
    socket_errors: int = 0
    refused_stores: int = 0
    bad_records: int = 0
    """Records in lookup answers that failed authentication or validation."""
    handovers: int = 0
    read_repairs: int = 0
    republished: int = 0
    drops: DropCounters = dataclasses.field(default_factory=DropCounters)

    @property
    def rpc_sent(self) -> int:
        return self.requests_sent + self.responses_sent

    @property
    def rpc_received(self) -> int:
        return self.requests_received + self.responses_received

    def as_dict(self) -> dict[str, int]:
        flat = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "drops"
        }
        flat.update({f"drop_{name}": count for name, count in self.drops.as_dict().items()})
        return flat
