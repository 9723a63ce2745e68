"""Fixtures for end-to-end tests with real guests under qemu:///system.

Use `guest_image` in a test to get libvirtd running and the tiny guest built and published
(scripts/start-libvirtd, scripts/build-guest --publish; both quick once done), and
`guest_run` for a GuestRun whose domains and files are removed after the test, failing the
test if anything is left behind.

Skips (with the reason) when not root or when SDMESH_E2E=0; on a root machine a setup
failure is a test failure, never a silent skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from e2e_guests import GuestImage, GuestRun, HostNotReady, ensure_host, reap_stale, skip_reason


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    if os.environ.get("SDMESH_E2E", "1") == "0":
        pytest.skip("SDMESH_E2E=0: real-guest tests disabled")
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        image = ensure_host()
    except HostNotReady as e:
        pytest.fail(f"cannot prepare libvirtd and the test guest: {e}", pytrace=False)
    # Domains of an earlier, killed test process would otherwise eat memory and CPU.
    reap_stale()
    return image


@pytest.fixture
def guest_run(guest_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestRun]:
    # The tag names the domains after the test, for whoever finds them in virsh list.
    tag = re.sub(r"[^a-z0-9]", "", request.node.name.lower().removeprefix("test_"))[:20]
    run = GuestRun(guest_image, tag=tag or None)
    try:
        yield run
    finally:
        run.cleanup()
    left = run.leftovers()
    assert not left, f"test left libvirt domains or files behind: {left}"
