"""Lease timing: the few numbers that decide how fast HA is and why it is safe.

No clock is shared: every figure is a duration measured on one host's own clock
(``CLOCK_BOOTTIME``, which keeps counting through a suspend, unlike ``CLOCK_MONOTONIC``).
Clocks may run at different *rates*; we assume each runs within ``drift`` of real time.

The bound, ``drift = 1 %``: quartz oscillators are specified within 100 ppm (0.01 %), and
NTP's kernel discipline slews a clock by at most 500 ppm (0.05 %), so 1 % is twenty times
the worst rate error a working host shows. A clock that stops (a host suspended with a clock
that does not count it, a frozen VM) is outside any rate bound: the fence guard's deadline
and the hardware watchdog cover that case (docs/ha.md).

The arithmetic (``T`` isolation timeout, ``R`` renew interval, ``D`` stop allowance,
``rho`` drift):

* A holder asks every voter for a grant each ``R`` and dates each grant at the moment it
  *sent* the request (before the voter could have granted it). Its lease runs until the
  k-th latest such date plus ``T`` (k a majority of the voters); it starts its isolation
  response ``D`` before that, so the VMs are stopped by the end of the lease.
* A voter that granted at its own time ``g`` tells a reclaimer the lease may still run
  until ``g + T * (1 + rho) / (1 - rho)`` on its clock. Real time: the holder's lease ends
  at most ``T / (1 - rho)`` after its request left, which is before the grant; the voter's
  wait lasts at least ``T * (1 + rho) / (1 - rho) / (1 + rho) = T / (1 - rho)`` real seconds
  after the grant. A majority of voters that all say "expired" includes one of the majority
  that last renewed the lease, so the lease has ended, and the VMs are stopped.
* Defaults ``T = 6``, ``R = 1``, ``D = 1``, ``rho = 0.01``: the holder starts stopping 5 s
  after its last majority round (it tolerates four lost rounds in a row); the rebuild wait
  is ``6 * 1.01 / 0.99 = 6.12`` s after a voter's last grant. ``kill -9`` of the agent: the
  fence guard stops the VMs at the same moment the agent would have.

The failover budget, from a host cut (or killed) at ``t0``, is *two waits in parallel, then
the rebuild*: ``max(lease wait, failure detection + loss confirmation) + rebuild``. The
lease wait is the 6.12 s above (the last grants came at about ``t0``). The shepherd starts
its reclaim only once SWIM has declared the host dead (failure detection, 2-5 s with the
default probe settings) and the loss has stayed unrefuted for ``LOSS_CONFIRM`` (2 s,
sdmesh.pools.losses): 4-7 s. The rebuild is the deploy and start of each VM elsewhere (an
image clone and a boot: from under a second on the test driver to tens of seconds for a
real guest). So VMs are *ordered* elsewhere 6.1-7 s after ``t0`` and run once their deploy
and boot complete; the 10 s target holds only for guests that deploy and boot in about 3 s.
``failover_orders_after`` computes the first part.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The isolation timeout, in seconds (the lease term): see the module docstring.
ISOLATION_TIMEOUT = 6.0
RENEW_INTERVAL = 1.0
STOP_ALLOWANCE = 1.0
DRIFT = 0.01
#: A planned leave (``sdmesh leave``, a restart or upgrade) asks for a lease this long: the
#: mesh keeps a departed host's VMs where they are for this long (the shepherd's away grace,
#: sdmesh.pools.shepherd.AWAY_GRACE), and the host's fence guard stops them if it is not back.
LEAVE_TERM = 300.0


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Lease durations, in seconds of each host's own clock."""

    isolation_timeout: float = ISOLATION_TIMEOUT
    renew_interval: float = RENEW_INTERVAL
    stop_allowance: float = STOP_ALLOWANCE
    drift: float = DRIFT
    leave_term: float = LEAVE_TERM

    def __post_init__(self) -> None:
        if not 0.0 <= self.drift < 0.5:
            raise ValueError(f"drift {self.drift} must be in [0, 0.5)")
        if self.renew_interval <= 0 or self.stop_allowance < 0:
            raise ValueError("renew interval must be positive, stop allowance not negative")
        if self.isolation_timeout <= self.stop_allowance + self.renew_interval:
            raise ValueError(
                f"isolation timeout {self.isolation_timeout} s must exceed the stop allowance "
                f"plus one renew interval ({self.stop_allowance + self.renew_interval} s)"
            )
        if self.leave_term < self.isolation_timeout:
            raise ValueError("the leave term must be at least the isolation timeout")

    def wait(self, term: float) -> float:
        """How long a voter waits after granting a lease of ``term`` before it may say the
        lease has surely ended: ``term`` stretched by the worst rate difference."""
        return term * (1.0 + self.drift) / (1.0 - self.drift)

    @property
    def rebuild_wait(self) -> float:
        """A lost host's VMs may be rebuilt this long after the last grant it got."""
        return self.wait(self.isolation_timeout)

    def failover_orders_after(self, detection: float, loss_confirm: float) -> float:
        """Seconds from a host's loss until its VMs are ordered elsewhere: the lease wait
        and the shepherd's loss verdict (SWIM's ``detection`` plus ``loss_confirm``) run in
        parallel. Add the VMs' own deploy and start for the whole failover."""
        return max(self.rebuild_wait, detection + loss_confirm)
