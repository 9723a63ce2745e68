"""pytest fixtures for tests on network-namespace hosts (import them into a conftest.py).

Why a module of the package: later tests (the sdmesh mesh, pools across hosts) reuse the same
fixtures, and a conftest cannot be imported from another test directory. Use::

    from sdmesh.testing.pytest_netns import netns_ready, testbed, testbed_factory  # noqa: F401

Without root, ``ip`` or ``nft`` the tests skip with the reason (``SDMESH_NETNS=0`` skips on
purpose); on a machine that can run them, a failing setup fails the test. Every testbed is
torn down after its test, and a test that leaves a namespace or a process behind fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sdmesh.testing.netns import NetnsError, Testbed, list_namespaces, reap_stale, skip_reason

TestbedFactory = Callable[[int], Testbed]


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Skip unless this machine can run namespace tests; reap what crashed runs left."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        reap_stale()
    except NetnsError as error:
        pytest.fail(f"cannot remove namespaces left by an earlier run: {error}", pytrace=False)


def open_testbed(n: int, tmp_path_factory: pytest.TempPathFactory | None = None) -> Testbed:
    """Create a testbed (logs under pytest's temporary directories, kept as pytest keeps
    them), turning a setup failure into a test failure with the reason."""
    try:
        directory = tmp_path_factory.mktemp("netns") if tmp_path_factory is not None else None
        testbed = Testbed(n, workdir=directory)
        testbed.create()
    except NetnsError as error:
        pytest.fail(f"cannot create {n} namespace hosts: {error}", pytrace=False)
    return testbed


def close_testbed(testbed: Testbed) -> None:
    """Tear down, print each process's log tail (pytest shows it if the test failed), and
    fail when anything is left behind."""
    for proc in testbed.procs():
        tail = "\n".join(proc.log().splitlines()[-15:])
        print(f"--- {proc.host.name}:{proc.label} rc={proc.returncode} {proc.log_path}\n{tail}")
    try:
        testbed.close()
    except NetnsError as error:
        pytest.fail(str(error), pytrace=False)
    left = testbed.leftovers() + list_namespaces(testbed.run_id + "-")
    if left:
        pytest.fail(f"testbed {testbed.run_id} left behind: {left}", pytrace=False)


@pytest.fixture
def testbed_factory(
    netns_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestbedFactory]:
    """``make(n)`` → a created Testbed of n hosts, torn down (and checked) after the test."""
    made: list[Testbed] = []

    def make(n: int) -> Testbed:
        testbed = open_testbed(n, tmp_path_factory)
        made.append(testbed)
        return testbed

    yield make
    for testbed in made:
        close_testbed(testbed)


@pytest.fixture
def testbed(testbed_factory: TestbedFactory) -> Testbed:
    """Three hosts h0, h1, h2 on one bridge."""
    return testbed_factory(3)


__all__ = [
    "TestbedFactory",
    "close_testbed",
    "netns_ready",
    "open_testbed",
    "testbed",
    "testbed_factory",
]
