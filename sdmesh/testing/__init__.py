"""Test and benchmark harness: hosts in network namespaces and the agents run on them.

Nothing in the agent imports this package; tests and benches do (``sdmesh.testing.netns``,
``sdmesh.testing.agents``, the pytest plugin ``sdmesh.testing.pytest_netns``).
"""
