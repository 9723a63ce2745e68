"""The host policy block of the agent's configuration: deny by default, strict parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmesh.agent.config import ConfigError, host_policy, load_config
from sdmesh.agent.meta import preliminary_meta


def test_the_defaults_deny(tmp_path: Path) -> None:
    config = load_config(None, {"state_dir": str(tmp_path)}, environ={})
    policy = host_policy(config)
    assert not policy.allow_shell
    # Not /var/lib/libvirt/images: other guests' live disks are there.
    assert policy.image_dirs == (tmp_path / "images",)
    assert policy.networks == ("default",)
    assert policy.bridges == () and policy.volume_groups == ()
    assert "shell" not in preliminary_meta("test", (), [], "http://x", config.allow_shell)


def test_the_images_dir_is_allowed_when_set(tmp_path: Path) -> None:
    config = load_config(None, {"images_dir": "/srv/images"}, environ={})
    assert host_policy(config).image_dirs[0] == Path("/srv/images")


def test_settings_from_the_file_and_messages_name_it(tmp_path: Path) -> None:
    file = tmp_path / "sdmesh.toml"
    file.write_text(
        "allow-shell = true\n"
        'allowed-image-dirs = ["/srv/images"]\n'
        'allowed-bridges = ["br0"]\n'
        "allowed-networks = []\n"
        'allowed-volume-groups = ["vg0"]\n'
    )
    config = load_config(file, {}, environ={})
    policy = host_policy(config, file)
    assert policy.allow_shell and policy.image_dirs == (Path("/srv/images"),)
    assert policy.bridges == ("br0",) and policy.networks == () and policy.volume_groups == ("vg0",)
    assert preliminary_meta("test", (), [], "http://x", config.allow_shell)["shell"] is True
    with pytest.raises(Exception, match=f"set allowed-networks in {file}"):
        policy.check_network("default")


def test_environment_lists_are_comma_separated() -> None:
    config = load_config(None, {}, environ={"SDMESH_ALLOWED_BRIDGES": "br0, br1"})
    assert config.allowed_bridges == ("br0", "br1")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("allow_shell", "maybe", "allow-shell must be true or false, got 'maybe'"),
        ("allowed_image_dirs", ["images"], "allowed-image-dirs: 'images' is not an absolute path"),
        ("allowed_bridges", ["br0; rm"], "allowed-bridges: 'br0; rm' is not a network"),
        ("allowed_volume_groups", [1], "allowed-volume-groups must be a list of strings"),
    ],
)
def test_bad_policy_settings_are_refused_by_name(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, {setting: value}, environ={})
    assert str(refused.value).startswith(message)
