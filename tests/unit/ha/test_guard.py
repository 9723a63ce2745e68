"""The fence guard's core and wire: fence when the agent stops renewing, never when disarmed."""

from __future__ import annotations

import pytest

from sdmesh.ha import guard as gc
from sdmesh.ha.guard_wire import GuardMessageError, decode, encode_arm, encode_disarm

FENCEABLE = frozenset({("p1", "*"), ("p2", "web/vm1")})


def kinds(actions: list[gc.Action]) -> list[type]:
    return [type(a) for a in actions if not isinstance(a, gc.Note)]


def test_fences_once_the_deadline_passes_without_a_new_arm() -> None:
    core = gc.GuardCore()
    core.handle(gc.Arm(10.0, 11.0, FENCEABLE), 5.0)
    assert kinds(core.handle(gc.Tick(), 9.9)) == []
    fences = [a for a in core.handle(gc.Tick(), 10.0) if isinstance(a, gc.Fence)]
    assert [f.fenceable for f in fences] == [FENCEABLE]
    assert core.status()["mode"] == "fencing"
    core.handle(gc.FenceDone(True, ("vm-a",)), 10.1)
    assert core.status()["mode"] == "fenced" and core.destroyed == ["vm-a"]
    assert kinds(core.handle(gc.Tick(), 20.0)) == []  # fenced once, not again


def test_renewals_push_the_deadline_and_a_disarm_never_fences() -> None:
    core = gc.GuardCore()
    for t in range(10):
        core.handle(gc.Arm(t + 5.0, t + 6.0, FENCEABLE), float(t))
        assert gc.Fence not in kinds(core.handle(gc.Tick(), t + 0.5))
    core.handle(gc.Disarm("planned restart"), 10.0)
    assert gc.Fence not in kinds(core.handle(gc.Tick(), 100.0))
    assert core.mode is gc.Mode.DISARMED


def test_a_failed_fence_is_retried_and_stops_the_watchdog() -> None:
    core = gc.GuardCore(watchdog_timeout=2.0)
    out = core.handle(gc.Arm(10.0, 11.0, FENCEABLE), 0.0)
    assert gc.OpenWatchdog in kinds(out)
    assert gc.PetWatchdog in kinds(core.handle(gc.Tick(), 8.0))  # 8 + 2 <= 11
    assert gc.PetWatchdog not in kinds(core.handle(gc.Tick(), 9.5))  # too close to the end
    core.handle(gc.Tick(), 10.0)
    core.handle(gc.FenceDone(False, (), "libvirtd hung"), 10.2)
    out = core.handle(gc.Tick(), 10.4)
    assert gc.Fence in kinds(out) and gc.PetWatchdog not in kinds(out)
    core.handle(gc.FenceDone(True, ("vm-a",)), 10.5)
    assert gc.PetWatchdog in kinds(core.handle(gc.Tick(), 10.6))  # fenced: no reset needed


def test_watchdog_closes_with_the_magic_character_only_when_safe() -> None:
    core = gc.GuardCore(watchdog_timeout=2.0)
    core.handle(gc.Arm(10.0, 11.0, FENCEABLE), 0.0)
    assert gc.CloseWatchdog(magic=False) in core.handle(gc.Terminate(), 1.0)
    core = gc.GuardCore(watchdog_timeout=2.0)
    core.handle(gc.Arm(10.0, 11.0, FENCEABLE), 0.0)
    assert gc.CloseWatchdog(magic=True) in core.handle(gc.Disarm("upgrade"), 1.0)


def test_arming_during_a_fence_adds_to_it_and_does_not_cancel_it() -> None:
    core = gc.GuardCore()
    core.handle(gc.Arm(1.0, 2.0, frozenset({("p1", "*")})), 0.0)
    core.handle(gc.Tick(), 1.0)
    core.handle(gc.Arm(9.0, 10.0, frozenset({("p3", "*")})), 1.1)
    assert core.mode is gc.Mode.FENCING
    assert core.fenceable == frozenset({("p1", "*"), ("p3", "*")})


def test_matches_pairs_and_whole_pools() -> None:
    assert gc.matches(FENCEABLE, "p1", "any/vm")
    assert gc.matches(FENCEABLE, "p2", "web/vm1")
    assert not gc.matches(FENCEABLE, "p2", "web/vm2")
    assert not gc.matches(FENCEABLE, "p3", "web/vm1")


def test_wire_round_trip_and_refusals() -> None:
    assert decode(encode_arm(1.5, 2.5, FENCEABLE)) == gc.Arm(1.5, 2.5, FENCEABLE)
    assert decode(encode_disarm("upgrade")) == gc.Disarm("upgrade")
    assert decode(b'{"op":"status"}') == "status"
    for bad in (
        b"\xff",
        b"[]",
        b'{"op":"explode"}',
        b'{"op":"arm","fence_at":"x","until":1,"fenceable":[]}',
        b'{"op":"arm","fence_at":2,"until":1,"fenceable":[]}',
        b'{"op":"arm","fence_at":1,"until":2,"fenceable":[["p"]]}',
        b'{"op":"arm","fence_at":1,"until":2,"fenceable":[["p",""]]}',
        b'{"op":"arm","fence_at":NaN,"until":2,"fenceable":[]}',
        b" " * (300 * 1024),
    ):
        with pytest.raises(GuardMessageError):
            decode(bad)
