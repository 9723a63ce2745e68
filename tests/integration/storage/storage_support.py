"""Helpers shared by the storage integration tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

MIB = 1024 * 1024

needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None,
    reason="qemu-img is not installed (Debian package qemu-utils)",
)


def make_sparse_base(path: Path, size_mib: int = 64) -> Path:
    """A raw base image with data at a few places and holes elsewhere."""
    with open(path, "wb") as image:
        image.truncate(size_mib * MIB)
        for offset, data in (
            (0, b"boot sector"),
            (5 * MIB, b"x" * MIB),
            ((size_mib - 1) * MIB, b"end"),
        ):
            image.seek(offset)
            image.write(data)
    return path


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512
