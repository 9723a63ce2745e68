"""What the harness says and computes without creating anything (runs anywhere)."""

from __future__ import annotations

import os

import pytest

from sdmesh.testing import netns
from sdmesh.testing.netns import NetnsError, Testbed

# --- without root: clear reasons -----------------------------------------------------------------


def test_not_root_gives_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDMESH_NETNS", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = netns.skip_reason()
    assert reason is not None and "needs root" in reason
    with pytest.raises(NetnsError, match="needs root"):
        Testbed(2).create()


def test_missing_tools_name_their_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDMESH_NETNS", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns, "_effective_caps", lambda: (1 << 12) | (1 << 21))
    monkeypatch.setattr(netns, "find_tool", lambda name: None if name == "nft" else "/x/ip")
    assert netns.skip_reason() == "`nft` not found: install the Debian package nftables"
    assert netns.skip_reason(need_nft=False) is None
    monkeypatch.setattr(netns, "find_tool", lambda name: None)
    assert netns.skip_reason() == "`ip` not found: install the Debian package iproute2"


def test_disabled_on_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDMESH_NETNS", "0")
    assert netns.skip_reason() == "SDMESH_NETNS=0: network-namespace tests disabled"


def test_faults_rules_are_rendered_per_bridge_port() -> None:
    tb = Testbed(4)  # never created: rules are computed, not applied
    tb._cut.add(1)
    tb._partitions.append((frozenset({0}), frozenset({2, 3})))
    tb._loss[3] = (12.5, "both")
    assert tb.fault_rules() == [
        'iifname "p1" drop',
        'oifname "p1" drop',
        'iifname { "p0" } oifname { "p2", "p3" } drop',
        'iifname { "p2", "p3" } oifname { "p0" } drop',
        'iifname "p3" ether type ip numgen random mod 10000 < 1250 drop',
        'oifname "p3" ether type ip numgen random mod 10000 < 1250 drop',
    ]
