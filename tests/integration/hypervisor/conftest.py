"""Simulated hypervisor hosts on libvirt's test driver (no daemon, no root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hv_support import MakeHost

from sdmesh.hypervisor.event_loop import silence_libvirt_stderr
from sdmesh.hypervisor.simulated_host import write_simulated_host


@pytest.fixture
def make_host(tmp_path: Path) -> MakeHost:
    """make_host(name, cpus=, memory_mib=) -> a test:/// URI of a fresh private host."""

    def make(name: str = "host", *, cpus: int = 8, memory_mib: int = 8192) -> str:
        return write_simulated_host(tmp_path / f"{name}.xml", cpus=cpus, memory_mib=memory_mib)

    return make


@pytest.fixture
def default_host() -> Iterator[Any]:
    """A raw connection to test:///default, the one host state shared by all connections.

    Holding it open keeps the state alive across driver reconnects; its demo domain
    ``test`` (8 GiB on a 3 GiB host) is stopped so admission has room. Closing the last
    connection at the end resets the shared host for the next test.
    """
    silence_libvirt_stderr()
    conn = libvirt.open("test:///default")
    demo = conn.lookupByName("test")
    if demo.isActive():
        demo.destroy()
    yield conn
    conn.close()
