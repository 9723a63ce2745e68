"""The membership core's failure detector: SWIM's probe rounds with Lifeguard's feedback.

Each protocol period probes one member directly, then through ``indirect_checks`` relays
that ack or nack; a member that answers neither is suspected. Acks and missing nacks feed the
local health multiplier, which stretches our own periods when we are the slow one. Relaying
pings for others lives here too.
"""

from __future__ import annotations

from sdmesh.membership.core_base import (
    PROBE,
    PROBE_TIMEOUT,
    RELAY_PREFIX,
    ProbeRound,
    Relay,
)
from sdmesh.membership.core_rules import StateRules
from sdmesh.membership.member import Address, State
from sdmesh.membership.messages import Ack, Nack, Ping, PingReq, SimpleMessage, Suspect
from sdmesh.membership.wire import MAX_UINT32


class Probing(StateRules):
    """Probe rounds, indirect probes and relays."""

    def _on_probe_tick(self) -> None:
        """Close the previous protocol period, then probe the next member in round-robin."""
        self._finish_probe()
        multiplier = self._health.multiplier
        self._arm(PROBE, self._now + self.config.probe_interval * multiplier)
        target = self._table.next_probe_target()
        if target is None:
            return
        self._seq = (self._seq + 1) & MAX_UINT32
        self._probe = ProbeRound(target.name, target.incarnation, self._seq)
        self.stats.probes += 1
        parts: list[SimpleMessage] = []
        if target.state is State.SUSPECT:
            # Lifeguard's buddy system: tell the suspect first, so it can refute at once.
            parts.append(Suspect(target.name, target.incarnation, self._name))
        parts.append(Ping(self._seq, target.name))
        self._send(target.addr, parts)
        self._arm(PROBE_TIMEOUT, self._now + self.config.probe_timeout * multiplier)

    def _on_probe_timeout(self) -> None:
        """No direct ack in time: ask relays, and expect each to ack or nack."""
        probe = self._probe
        if probe is None or probe.acked:
            return
        target = self._table.get(probe.target)
        if target is None or not target.state.live:
            return
        relays = self._table.sample(
            self.config.indirect_checks, alive_only=True, exclude=probe.target
        )
        request = PingReq(probe.seq, probe.target, target.addr, nack=True)
        for relay in relays:
            self._send(relay.addr, [request])
        probe.relays = len(relays)
        self.stats.indirect_probes += 1

    def _finish_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        self._disarm(PROBE_TIMEOUT)
        target = self._table.get(probe.target)
        if target is None or not target.state.live:
            return
        # Lifeguard: missing nacks mean our own links are the likelier culprit.
        missing = probe.relays - probe.nacks if probe.relays else 1
        self._health.apply(max(0, missing))
        self.stats.probe_failures += 1
        was_alive = target.state is State.ALIVE
        self._on_suspect(Suspect(probe.target, probe.incarnation, self._name))
        if was_alive and target.state is State.SUSPECT:
            self.stats.suspicions_raised += 1

    def _on_ack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                self._health.apply(-1)
                self._disarm(PROBE_TIMEOUT)
            return
        relay = self._relays.pop(seq, None)
        if relay is None:
            self.stats.stale_acks += 1
            return
        self._disarm(RELAY_PREFIX + str(seq))
        self._send(relay.requester, [Ack(relay.seq)])

    def _on_nack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.nacks += 1

    def _on_ping_req(self, src: Address, request: PingReq) -> None:
        """Probe ``target`` for ``src``; forward the ack, or nack when it stays silent."""
        if request.target == self._name:
            self._send(src, [Ack(request.seq)])
            return
        self._seq = (self._seq + 1) & MAX_UINT32
        self._relays[self._seq] = Relay(src, request.seq, request.nack)
        self._send(request.target_addr, [Ping(self._seq, request.target)])
        deadline = self.config.probe_timeout * self.config.relay_nack_fraction
        self._arm(RELAY_PREFIX + str(self._seq), self._now + deadline)

    def _on_relay_timeout(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send(relay.requester, [Nack(relay.seq)])
