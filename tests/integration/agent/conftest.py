"""Fixtures shared by the loopback agent tests: a mesh of real `sdmesh join` processes,
stopped (with everything it started) whatever the test did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_agent_loopback import Mesh
from .test_pools_loopback import PoolMesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def pool_mesh(tmp_path: Path) -> Iterator[PoolMesh]:
    mesh = PoolMesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop()
