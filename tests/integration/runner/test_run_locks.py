"""Run locks: one live run per pool, crashed runs claimed while they are cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.runner.local import RunError, RunLock, claim_abandoned


def test_a_held_lock_refuses_a_second_run(tmp_path: Path) -> None:
    first = RunLock(tmp_path, "q")
    first.acquire()
    with pytest.raises(RunError, match="already running here"):
        RunLock(tmp_path, "q").acquire()
    first.release()
    assert not (tmp_path / "q.lock").exists()
    RunLock(tmp_path, "q").acquire()


def test_cleanup_holds_abandoned_locks_so_no_run_starts_meanwhile(tmp_path: Path) -> None:
    """Regression (review): a run starting while another cleaned its pool up got reaped."""
    (tmp_path / "q.lock").write_text("12345")  # a crashed run of pool q
    with claim_abandoned(tmp_path, keep="other") as stale:
        assert stale == ["q"]
        with pytest.raises(RunError):
            RunLock(tmp_path, "q").acquire()  # cannot start while q is being cleaned up
    assert not (tmp_path / "q.lock").exists()
    late = RunLock(tmp_path, "q")
    late.acquire()  # afterwards it can, on a fresh file...
    with pytest.raises(RunError):
        RunLock(tmp_path, "q").acquire()  # ...and only once


def test_a_live_run_is_never_claimed(tmp_path: Path) -> None:
    live = RunLock(tmp_path, "live")
    live.acquire()
    with claim_abandoned(tmp_path, keep="mine") as stale:
        assert stale == []
    assert (tmp_path / "live.lock").exists()
