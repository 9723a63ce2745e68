"""Membership tuning and the formulas that scale it with the size of the mesh.

Defaults are a LAN profile that detects faster than Serf/memberlist's LAN profile (1 s probe
interval, 500 ms timeout). Hypervisor hosts share one or a few switched segments where a round
trip is well under a millisecond, so a 200 ms timeout still leaves two orders of magnitude of
slack, and Lifeguard's local health multiplier stretches interval and timeout on a node that is
itself slow (Lifeguard, Dadgar et al. 2018).

Simulated figures at N = 60 (``bench/membership_sim.py``): first detection 1.6 probe periods
(0.8 s), every member has marked a crashed host failed after 4.8 s on average (Serf: 9.2 s),
an update reaches everyone in 0.8 s, and 10 minutes at 10% datagram loss give no false failure.

Two defaults depart from memberlist for the sake of that last figure. Four relays instead of
three make a probe that fails at 10% loss ~3x rarer (each relay path needs four datagrams).
A retransmit multiplier of 6 instead of 4 makes it ~30x less likely that one member misses a
refutation entirely, which would otherwise let its own suspicion expire: at 4, a mesh of 60
saw about one false failure every three minutes at 10% loss. Both cost bandwidth only while
something is failing or changing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Protocol knobs; times in seconds."""

    probe_interval: float = 0.5
    """One SWIM protocol period: each member probes one other member per period."""
    probe_timeout: float = 0.2
    """Wait this long for a direct ack before asking relays (scaled by local health)."""
    indirect_checks: int = 4
    """Relays asked to probe on our behalf when the direct ack does not come."""
    relay_nack_fraction: float = 0.8
    """Relays nack after this fraction of ``probe_timeout``, so the nack reaches the requester
    before its probe period ends."""
    suspicion_mult: float = 4.0
    """Minimum suspicion timeout = mult * max(1, log10 N) * probe_interval (memberlist's scale)."""
    suspicion_max_mult: float = 6.0
    """Maximum suspicion timeout, without confirmations = this * minimum timeout."""
    suspicion_confirmations: int = 3
    """Independent suspicions that shrink the timeout from maximum to minimum (Lifeguard's K)."""
    max_local_health: int = 8
    """Ceiling of the local health multiplier; interval and timeout scale by (LHM + 1)."""
    retransmit_mult: int = 6
    """Each update is piggybacked this * ceil(log10(N + 1)) times by every member."""
    gossip_interval: float = 0.2
    """Pending updates are also pushed to ``gossip_nodes`` random members this often."""
    gossip_nodes: int = 3
    gossip_to_dead_time: float = 15.0
    """Keep gossiping to a member this long after it died, so it can learn it and refute."""
    push_pull_interval: float = 15.0
    """Full state exchange with one random member; stretched for meshes above 32 members."""
    reconnect_interval: float = 10.0
    """Try a push-pull with one random dead member this often, to heal partitions."""
    join_sync_delay: float = 0.5
    """About this long after joining, one push-pull with the member that let us in (then every
    ``push_pull_interval`` as usual): the members that joined alongside arrive in one go."""
    join_retry_initial: float = 1.0
    join_retry_max: float = 30.0
    """A member whose seeds all failed to answer retries them after ``join_retry_initial``
    seconds, doubling up to this, while it knows no other member."""
    reap_interval: float = 30.0
    dead_reap_after: float = 86400.0
    """Dead members are remembered (and reconnection attempted) this long."""
    left_reap_after: float = 3600.0
    """Departed members are remembered this long, so late gossip cannot resurrect them."""
    leave_timeout: float = 1.0
    """Gossip our departure this long before reporting ``LeaveCompleted``."""
    max_datagram_bytes: int = 1400
    """Budget for one encoded datagram (msgpack bytes, before transport sealing)."""
    max_stream_bytes: int = 16 * 1024 * 1024 - 1024
    """Budget for one encoded push-pull message: the stream transport's 16 MiB frame less
    room for sealing. Rumors that do not fit are left out, oldest first."""
    max_rumors: int = 4096
    """Rumors kept; beyond this the oldest (by Lamport time) are forgotten."""
    rumor_ttl: float = 86400.0
    """Rumors are forgotten this long after publication (republish to keep one longer)."""
    randomize_probe_phase: bool = True
    """Start the first probe at a random point in the period; False aligns periods across
    nodes started together, which is the setting of SWIM's analysis (for experiments)."""

    def __post_init__(self) -> None:
        if self.probe_interval <= 0 or self.probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be positive")
        relay_deadline = self.probe_timeout * (1 + self.relay_nack_fraction)
        if relay_deadline >= self.probe_interval:
            raise ValueError(
                "probe_interval must exceed probe_timeout * (1 + relay_nack_fraction), "
                "or nacks arrive after the probe period ended"
            )
        if not 0 < self.relay_nack_fraction < 1:
            raise ValueError("relay_nack_fraction must be in (0, 1)")
        if self.suspicion_mult <= 0 or self.suspicion_max_mult < 1:
            raise ValueError("suspicion_mult must be positive and suspicion_max_mult >= 1")
        if min(self.indirect_checks, self.suspicion_confirmations, self.max_local_health) < 0:
            raise ValueError("counts cannot be negative")
        if self.retransmit_mult < 1 or self.gossip_nodes < 0:
            raise ValueError("retransmit_mult must be >= 1 and gossip_nodes >= 0")
        if self.max_datagram_bytes < 256:
            raise ValueError("max_datagram_bytes below 256 cannot carry an alive message")
        if self.max_stream_bytes < self.max_datagram_bytes:
            raise ValueError("max_stream_bytes must be at least max_datagram_bytes")
        if self.max_rumors < 1 or self.rumor_ttl <= 0:
            raise ValueError("max_rumors must be >= 1 and rumor_ttl positive")


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    """How many times each member piggybacks an update: enough for epidemic spread to reach
    everyone with high probability (SWIM section 4.1: lambda * log N)."""
    return retransmit_mult * max(1, math.ceil(math.log10(members + 1)))


def suspicion_bounds(config: MembershipConfig, members: int) -> tuple[float, float]:
    """``(min, max)`` suspicion timeouts for a mesh of ``members``.

    Scaled with log N because dissemination of a refutation takes O(log N) periods.
    """
    low = config.suspicion_mult * max(1.0, math.log10(max(1, members))) * config.probe_interval
    return low, low * config.suspicion_max_mult


def suspicion_timeout(low: float, high: float, expected: int, confirmations: int) -> float:
    """Lifeguard's dynamic suspicion timeout.

    Starts at ``high`` and falls logarithmically towards ``low`` as independent confirmations
    arrive; with ``expected`` of them it is ``low``. The logarithm makes the first
    confirmations count most (Lifeguard, section 4.2).
    """
    if expected < 1:
        return low
    fraction = math.log(min(confirmations, expected) + 1) / math.log(expected + 1)
    return max(low, high - (high - low) * fraction)


def push_pull_period(interval: float, members: int) -> float:
    """Push-pull period: one more ``interval`` per doubling of the mesh beyond 32 members.

    Each exchange carries O(N) state, so stretching the period keeps anti-entropy traffic from
    growing as fast as the mesh; gossip still carries the fast path.
    """
    if members <= 32:
        return interval
    return interval * (1 + math.ceil(math.log2(members / 32)))
