"""Host identities between namespace hosts: agents provisioned by the harness with a key and a
certificate from one CA join and agree."""

from __future__ import annotations

import pytest

from sdmesh.testing.agents import SdmeshAgent, all_alive, start_mesh, wait_views
from sdmesh.testing.pytest_netns import close_testbed, open_testbed

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_enrolled_agents_join_and_agree(
    netns_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    testbed = open_testbed(3, tmp_path_factory)
    kind = SdmeshAgent(testbed, identities=True)
    try:
        reason = kind.unavailable()
        if reason:
            pytest.skip(reason)
        hosts = testbed.hosts[:3]
        start_mesh(kind, hosts)
        names = [host.name for host in hosts]
        assert wait_views(kind, hosts, all_alive(names), timeout=30).complete
        # Every agent runs with a CA: each checked the others' signed claims.
        for host in hosts:
            assert (testbed.workdir / f"{host.name}.sdmesh" / "state" / "identity").is_dir()
    finally:
        kind.close()
        close_testbed(testbed)
