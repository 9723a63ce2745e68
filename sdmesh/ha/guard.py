"""The fence guard's decisions, sans-IO: fencing that outlives the agent.

The agent may die (``kill -9``, a crash, the OOM killer) or hang while libvirtd and the
guests run on; its lease then ends with nobody to apply the isolation response, and the
mesh rebuilds the VMs elsewhere. The fence guard is a small separate process the agent keeps
*armed*: with every lease renewal it says when to fence (``Arm.fence_at``, the lease's end
less the stop allowance, on the host's ``CLOCK_BOOTTIME``) and which pools' VMs are
fenceable. If that moment passes without a newer arm, the guard destroys those domains.

A planned stop (``sdmesh leave``, a restart or upgrade) arms it with the long lease the
leave obtained (the mesh's away grace) or disarms it when nothing here is fenceable: a
planned stop never fences, yet VMs left without an agent for longer than the mesh waits are
still stopped before they are rebuilt.

With a watchdog device (opt-in, ``/dev/watchdog``: hardware or ``softdog``), the guard pets
it only while the host may still run its VMs or has fenced them: a guard that hangs, or a
fence that fails (libvirtd hung), stops the petting and the watchdog resets the host by the
end of the lease. A planned disarm closes the device with the magic character.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

Fenceable = frozenset[tuple[str, str]]
"""(pool, component path) pairs; path ``*`` means every VM of the pool."""


class Mode(enum.Enum):
    IDLE = "idle"
    """Never armed since the guard started: nothing to guard yet."""
    ARMED = "armed"
    DISARMED = "disarmed"
    FENCING = "fencing"
    FENCED = "fenced"
    FAILED = "failed"
    """A fence failed: retried every tick; the watchdog (if any) is no longer petted."""


@dataclass(frozen=True, slots=True)
class Arm:
    fence_at: float
    until: float
    fenceable: Fenceable


@dataclass(frozen=True, slots=True)
class Disarm:
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Look at the clock (the driver ticks every ``keepalive_interval`` at most)."""


@dataclass(frozen=True, slots=True)
class FenceDone:
    ok: bool
    destroyed: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class Terminate:
    """SIGTERM: the guard itself is stopping."""


Event = Arm | Disarm | Tick | FenceDone | Terminate


@dataclass(frozen=True, slots=True)
class Fence:
    """Destroy every running domain whose sdmesh metadata matches ``fenceable``."""

    fenceable: Fenceable
    reason: str


@dataclass(frozen=True, slots=True)
class PetWatchdog:
    pass


@dataclass(frozen=True, slots=True)
class OpenWatchdog:
    pass


@dataclass(frozen=True, slots=True)
class CloseWatchdog:
    """Close the device; ``magic``: write 'V' first so the watchdog stops counting."""

    magic: bool


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the log: what the guard did and why."""

    level: str
    message: str


Action = Fence | PetWatchdog | OpenWatchdog | CloseWatchdog | Note


def matches(fenceable: Fenceable, pool: str, path: str) -> bool:
    return (pool, path) in fenceable or (pool, "*") in fenceable


class GuardCore:
    """Feed events with ``now`` (``CLOCK_BOOTTIME`` seconds); execute the actions in order."""

    def __init__(self, watchdog_timeout: float | None = None) -> None:
        if watchdog_timeout is not None and watchdog_timeout <= 0:
            raise ValueError("the watchdog timeout must be positive")
        self.watchdog_timeout = watchdog_timeout
        self.mode = Mode.IDLE
        self.fence_at: float | None = None
        self.until: float | None = None
        self.fenceable: Fenceable = frozenset()
        self.destroyed: list[str] = []
        self._watchdog_open = False

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        if isinstance(event, Arm):
            self._arm(event, now, out)
        elif isinstance(event, Disarm):
            self.mode = Mode.DISARMED
            self.fence_at = self.until = None
            out.append(Note("info", f"disarmed: {event.reason}"))
            if self._watchdog_open:
                self._watchdog_open = False
                out.append(CloseWatchdog(magic=True))
        elif isinstance(event, FenceDone):
            self._fence_done(event, out)
        elif isinstance(event, Terminate):
            if self._watchdog_open:
                self._watchdog_open = False
                guarding = self.mode in (Mode.ARMED, Mode.FENCING, Mode.FAILED)
                if guarding:
                    out.append(Note("warning", "stopping while armed: the watchdog runs on"))
                out.append(CloseWatchdog(magic=not guarding))
            return out
        self._tick(now, out)
        return out

    def _arm(self, event: Arm, now: float, out: list[Action]) -> None:
        if self.mode in (Mode.FENCING, Mode.FAILED):
            # A fence under way finishes first; the VMs listed now were started after it.
            self.fenceable = self.fenceable | event.fenceable
            out.append(Note("warning", "armed again while fencing: fencing goes on"))
            return
        if self.mode in (Mode.IDLE, Mode.DISARMED, Mode.FENCED):
            out.append(Note("info", "armed"))
        self.mode = Mode.ARMED
        self.fence_at, self.until, self.fenceable = event.fence_at, event.until, event.fenceable
        if self.watchdog_timeout is not None and not self._watchdog_open:
            self._watchdog_open = True
            out.append(OpenWatchdog())

    def _tick(self, now: float, out: list[Action]) -> None:
        if self.mode is Mode.ARMED and self.fence_at is not None and now >= self.fence_at:
            self.mode = Mode.FENCING
            reason = "the agent stopped renewing its lease (dead or hung)"
            out.append(Note("warning", f"fencing: {reason}"))
            out.append(Fence(self.fenceable, reason))
        elif self.mode is Mode.FAILED:
            out.append(Fence(self.fenceable, "retrying a failed fence"))
        if self._watchdog_open and self._may_pet(now):
            out.append(PetWatchdog())

    def _may_pet(self, now: float) -> bool:
        """Pet while the host may run its VMs or has stopped them; otherwise let the
        watchdog reset the host, at the latest when the lease ends."""
        assert self.watchdog_timeout is not None
        if self.mode in (Mode.IDLE, Mode.DISARMED, Mode.FENCED):
            return True
        if self.mode is Mode.FAILED or self.until is None:
            return False
        return now + self.watchdog_timeout <= self.until

    def _fence_done(self, event: FenceDone, out: list[Action]) -> None:
        if self.mode not in (Mode.FENCING, Mode.FAILED):
            return
        self.destroyed.extend(event.destroyed)
        if event.ok:
            self.mode = Mode.FENCED
            self.fence_at = None
            shown = ", ".join(event.destroyed) or "none running"
            out.append(Note("warning", f"fenced: destroyed {shown}"))
        else:
            self.mode = Mode.FAILED
            out.append(Note("error", f"fence failed: {event.error}; retrying"))

    def status(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "fence_at": self.fence_at,
            "until": self.until,
            "fenceable": sorted([pool, path] for pool, path in self.fenceable),
            "destroyed": list(self.destroyed[-64:]),
        }
