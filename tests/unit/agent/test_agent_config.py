"""Agent settings that are wrong are refused by name before anything starts."""

from __future__ import annotations

import pytest

from sdmesh.agent.config import ConfigError, load_config


@pytest.mark.parametrize("setting", ["bind", "advertise"])
def test_gossip_addresses_must_be_ip_addresses(setting: str) -> None:
    with pytest.raises(ConfigError, match=f"{setting}: 'nonsense' is not an IP address"):
        load_config(None, {setting: "nonsense:7946"}, environ={})


@pytest.mark.parametrize("value", ["10.0.0.5:7946", "0.0.0.0", "[::1]:7946", ":7946"])
def test_ip_addresses_and_wildcards_are_taken(value: str) -> None:
    config = load_config(None, {"bind": value}, environ={})
    assert config.bind[1] == 7946
