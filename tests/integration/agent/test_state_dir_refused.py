"""`sdmesh join` refuses a state directory someone else owns before anything is created
(issue 11 item 6): in it, every name the agent would write can be planted in advance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_agent_loopback import free_port

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_dir_owned_by_nobody_is_refused_at_start_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    gossip, api = free_port(pair=True), free_port()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sdmesh", "join", "--name", "a", "--insecure"),
            *("--bind", f"127.0.0.1:{gossip}", "--api", f"127.0.0.1:{api}"),
            *("--state-dir", str(state), "--hypervisor", "test"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"state directory {state} is owned by uid {NOBODY}, not by this agent" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(state.iterdir()) == []
