"""The systemd unit passes systemd-analyze verify; the example configuration loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdmesh.agent.config import load_config

AGENTS = Path(__file__).resolve().parents[3] / "agents"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sdmesh.service" not in result.stderr, result.stderr


#: ``systemd-analyze security --offline=true`` of agents/sdmesh.service: 7.4 before issue 12,
#: 1.9 after. Lower it when the unit gets tighter; never raise it to make a change pass.
MAX_EXPOSURE = 2.1  # CAP_CHOWN (the socket goes to group sdmesh) costs 0.2


def installed_unit(tmp_path: Path) -> Path:
    sdmesh = Path(sys.executable).with_name("sdmesh")
    unit = tmp_path / "sdmesh.service"
    unit.write_text(
        (AGENTS / "sdmesh.service").read_text().replace("/usr/local/bin/sdmesh", str(sdmesh))
    )
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_exposure_does_not_regress(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"},
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot score a unit file offline (systemd < 250)")
    found = re.search(r"Overall exposure level for sdmesh\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_keeps_its_hardening() -> None:
    """The settings issue 12 asked for, whatever systemd-analyze thinks of them."""
    settings = set((AGENTS / "sdmesh.service").read_text().splitlines())
    for line in (
        "UMask=0077",
        "StateDirectoryMode=0711",
        "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER",
        "SystemCallFilter=@system-service",
        "MemoryMax=1G",
        "TasksMax=512",
        "LimitNOFILE=65536",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in settings, line


def test_example_configuration_loads() -> None:
    config = load_config(
        AGENTS / "sdmesh.toml", {"name": "hv1"}, environ={"SDMESH_API": "127.0.0.1:9"}
    )
    assert config.peers == (("10.0.0.1", 7946), ("10.0.0.2", 7946))
    assert config.api == ("127.0.0.1", 9) and config.name == "hv1"
    assert config.hypervisor == "qemu:///system" and config.labels == ("ssd",)


def test_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    from sdmesh.agent.config import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('bnid = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError, match="unknown setting 'bnid'"):
        load_config(bad, {}, environ={})
    with pytest.raises(ConfigError, match="port 'x'"):
        load_config(None, {"bind": "1.2.3.4:x"}, environ={})
    with pytest.raises(ConfigError, match="out of range"):
        load_config(None, {}, environ={"SDMESH_API": "127.0.0.1:70000"})


def test_peer_names_are_resolved_once(tmp_path: Path) -> None:
    from sdmesh.agent.config import ConfigError

    config = load_config(None, {"peers": ("localhost:7000",)}, environ={})
    assert config.peers == (("127.0.0.1", 7000),)
    with pytest.raises(ConfigError, match="cannot resolve"):
        load_config(None, {"peers": ("no-such-host.invalid:7000",)}, environ={})
