"""Where volumes and host locks live unless configured otherwise."""

from __future__ import annotations

from pathlib import Path

#: System-wide state directory; tests and unprivileged runs pass a directory of their own.
DEFAULT_STATE_DIR = Path("/var/lib/sdmesh/volumes")


def lock_dir_for(state_dir: Path, lock_dir: Path | None) -> Path:
    """Locks are per host: every backend on a host must agree on this directory."""
    return lock_dir if lock_dir is not None else state_dir / "locks"
