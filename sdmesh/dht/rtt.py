"""Adaptive RPC timeouts: TCP's retransmission timer (RFC 6298) per contact.

The stock ``rpcudp`` waits a fixed 5 s for every reply, so one dead peer stalls a lookup round
for 5 s. Here each contact's timeout is ``SRTT + 4 * RTTVAR`` (Jacobson/Karels), clamped to
``[minimum, maximum]``; a live peer on a LAN answers in a millisecond, so a dead one costs the
minimum instead of 5 s.

Two deliberate departures from RFC 6298:

* No exponential backoff on a timeout. Backoff protects a congested path carrying
  retransmissions; DHT requests are never retransmitted (a lookup asks someone else), and a
  contact that times out is usually dead, so backing off would only make every dead contact
  more expensive for every later lookup. Repeated failures are handled by eviction instead.
* Late replies are samples. Karn's rule discards RTTs of retransmitted segments because their
  replies are ambiguous; every RPC here has a unique id, so a reply that arrives after its
  timeout measures that request exactly, and taking it lets a slow but live contact raise its
  own timeout rather than time out forever.

A contact never measured gets the pool-wide estimate (one estimator fed by every sample):
peers on the same network tend to have similar RTTs, and it is a far better first guess than
RFC 6298's fixed 1 s, which stays as the value before any sample at all.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Hashable


@dataclasses.dataclass(frozen=True)
class RttConfig:
    """Timer constants; the defaults suit a LAN of hypervisor hosts."""

    initial: float = 1.0
    """Timeout before any RTT has been measured (RFC 6298 section 2.1)."""
    minimum: float = 0.05
    maximum: float = 2.0
    gain: float = 1 / 8
    """Weight of a new sample in SRTT (RFC 6298's alpha)."""
    variance_gain: float = 1 / 4
    """Weight of a new deviation in RTTVAR (RFC 6298's beta)."""
    variance_factor: float = 4.0
    """K in SRTT + K * RTTVAR."""

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum:
            raise ValueError("RTT clamps must satisfy 0 < minimum <= maximum")
        if not 0 < self.gain <= 1 or not 0 < self.variance_gain <= 1:
            raise ValueError("RTT gains must be in (0, 1]")


class RttEstimator:
    """Smoothed RTT and its mean deviation for one path."""

    __slots__ = ("_config", "rttvar", "samples", "srtt")

    def __init__(self, config: RttConfig) -> None:
        self._config = config
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, rtt: float) -> None:
        """Feed one measured round trip (seconds); negative clock noise counts as zero."""
        rtt = max(0.0, rtt)
        config = self._config
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar += config.variance_gain * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += config.gain * (rtt - self.srtt)
        self.samples += 1

    def timeout(self) -> float:
        config = self._config
        if self.srtt is None:
            return config.initial
        raw = self.srtt + config.variance_factor * self.rttvar
        return min(config.maximum, max(config.minimum, raw))


class RttTable:
    """Per-contact estimators (bounded, least recently used forgotten first) and a pool-wide one."""

    def __init__(self, config: RttConfig | None = None, *, max_contacts: int = 4096) -> None:
        if max_contacts < 1:
            raise ValueError("max_contacts must be positive")
        self.config = config or RttConfig()
        self.overall = RttEstimator(self.config)
        self._max = max_contacts
        self._contacts: OrderedDict[Hashable, RttEstimator] = OrderedDict()

    def __len__(self) -> int:
        return len(self._contacts)

    def sample(self, contact: Hashable, rtt: float) -> None:
        estimator = self._contacts.get(contact)
        if estimator is None:
            estimator = RttEstimator(self.config)
            self._contacts[contact] = estimator
            if len(self._contacts) > self._max:
                self._contacts.popitem(last=False)
        else:
            self._contacts.move_to_end(contact)
        estimator.sample(rtt)
        self.overall.sample(rtt)

    def timeout_for(self, contact: Hashable) -> float:
        estimator = self._contacts.get(contact)
        if estimator is not None:
            return estimator.timeout()
        return self.overall.timeout()

    def estimator(self, contact: Hashable) -> RttEstimator | None:
        return self._contacts.get(contact)

    def forget(self, contact: Hashable) -> None:
        self._contacts.pop(contact, None)
