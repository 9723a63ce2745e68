"""SmartFrog's Repeat with a negative count runs its action until it fails (issue 13)."""

from __future__ import annotations

from sdmesh.lifecycle.model import LeafEnded, TerminationRecord

from .harness import SimDriver, leaf


def test_a_negative_repeat_runs_until_the_action_fails() -> None:
    sim = SimDriver(f"sfConfig extends Repeat {{ repeat -1; {leaf('action')} }}")
    for i, at in enumerate((5, 10, 15, 20), start=1):
        sim.schedule(at, LeafEnded(f"sfConfig:running_{i}", TerminationRecord.normal_end("ok")))
    sim.schedule(25, LeafEnded("sfConfig:running_5", TerminationRecord.abnormal("boom")))
    sim.run()
    assert sim.ops("deploy") == [f"running_{i}" for i in range(1, 6)]
    assert sim.ended is not None and not sim.ended.normal
