"""Tests on hosts in network namespaces: the fixtures live in sdmesh.testing.pytest_netns so
any test directory can import them; without root, ip or nft these tests skip with the reason."""

from sdmesh.testing.pytest_netns import netns_ready, testbed, testbed_factory

__all__ = ["netns_ready", "testbed", "testbed_factory"]
