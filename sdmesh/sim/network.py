"""A simulated datagram network: latency with jitter, packet loss, partitions."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Times in seconds. Defaults resemble one switched LAN segment."""

    latency: float = 0.0005
    """One-way datagram latency."""
    jitter: float = 0.0002
    """Uniform extra delay in ``[0, jitter]`` per datagram."""
    loss: float = 0.0
    """Probability that any datagram is lost."""
    stream_latency: float = 0.002
    """Time for a push-pull stream request (or reply) to arrive: connect plus transfer."""
    stream_timeout: float = 1.0
    """When a stream cannot connect, the initiator learns it after this long."""


class Network:
    """Decides the fate of each datagram; all randomness comes from one seeded ``Random``."""

    def __init__(self, config: NetworkConfig, rng: random.Random) -> None:
        self.config = config
        self.loss = config.loss
        self._rng = rng
        self._link_loss: dict[tuple[str, str], float] = {}
        self._link_latency: dict[tuple[str, str], float] = {}
        self._group: dict[str, int] = {}

    def set_link_loss(self, src: str, dst: str, loss: float) -> None:
        """Loss on the directed link ``src -> dst``, instead of the global loss."""
        self._link_loss[(src, dst)] = loss

    def clear_link_loss(self) -> None:
        self._link_loss.clear()

    def set_link_latency(self, src: str, dst: str, latency: float) -> None:
        """One-way latency on the directed link ``src -> dst``, instead of the global one."""
        self._link_latency[(src, dst)] = latency

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut the network into ``groups``; nodes in no group form one more group together."""
        self._group = {}
        for index, group in enumerate(groups, start=1):
            for name in group:
                self._group[name] = index

    def heal(self) -> None:
        self._group = {}

    def connected(self, src: str, dst: str) -> bool:
        """False when a partition separates the two nodes."""
        if not self._group:
            return True
        return self._group.get(src, 0) == self._group.get(dst, 0)

    def delivers(self, src: str, dst: str) -> bool:
        """Whether one datagram from ``src`` reaches ``dst``."""
        if self._group and not self.connected(src, dst):
            return False
        loss = self._link_loss.get((src, dst), self.loss) if self._link_loss else self.loss
        return loss <= 0.0 or self._rng.random() >= loss

    def delay(self, src: str, dst: str) -> float:
        """Transit time of one datagram from ``src`` to ``dst``."""
        latency = self.config.latency
        if self._link_latency:
            latency = self._link_latency.get((src, dst), latency)
        jitter = self.config.jitter
        return latency + (self._rng.random() * jitter if jitter else 0.0)
