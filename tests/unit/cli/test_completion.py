"""``sdmesh completion``: click's scripts, wired to the entry point; pool names from the agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.shell_completion import BashComplete
from click.testing import CliRunner

from sdmesh.cli.completion import COMPLETE_VAR
from sdmesh.cli.main import cli

from .fake_agent import FakeAgent, closed_port_url

MARKERS = {
    "bash": "complete -o nosort -F _sdmesh_completion sdmesh",
    "zsh": "#compdef sdmesh",
    "fish": "complete --no-files --command sdmesh",
}


@pytest.mark.parametrize("shell", sorted(MARKERS))
def test_the_script_is_clicks_for_the_sdmesh_command(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert MARKERS[shell] in result.stdout and COMPLETE_VAR in result.stdout


def test_an_unknown_shell_is_bad_input_and_help_says_how_to_install() -> None:
    assert CliRunner().invoke(cli, ["completion", "tcsh"]).exit_code == 2
    help_text = CliRunner().invoke(cli, ["completion", "--help"]).stdout
    assert "bash-completion/completions/sdmesh" in help_text
    assert "~/.config/fish/completions/sdmesh.fish" in help_text and "_sdmesh" in help_text


def complete(words: list[str], incomplete: str, env: dict[str, str] | None = None) -> list[str]:
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        completer = BashComplete(cli, {}, "sdmesh", COMPLETE_VAR)
        return [item.value for item in completer.get_completions(words, incomplete)]
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_commands_and_options_complete() -> None:
    assert "completion" in complete([], "comp")
    assert set(complete([], "s")) >= {"show", "status", "submit"}
    assert "--wait" in complete(["terminate"], "--w")


def test_pool_names_come_from_the_agent() -> None:
    pools = [{"pool": "web", "state": "running"}, {"pool": "db", "state": "running"}]
    with FakeAgent({("GET", "/v1/pools"): lambda _: (200, pools)}) as agent:
        assert complete(["status", "--agent", agent.url], "") == ["web", "db"]
        assert complete(["terminate"], "w", env={"SDMESH_AGENT": agent.url}) == ["web"]


def test_pool_completion_is_silent_and_quick_without_an_agent() -> None:
    started = time.monotonic()
    assert complete(["status", "--agent", closed_port_url()], "") == []
    with FakeAgent({("GET", "/v1/pools"): lambda _: (500, "boom")}) as agent:
        assert complete(["terminate", "--agent", agent.url], "") == []
    assert time.monotonic() - started < 3


def test_the_entry_point_answers_the_shells_requests() -> None:
    """What the installed script runs: ``sdmesh`` with _SDMESH_COMPLETE in its environment."""
    code = "import sys; sys.argv[0] = 'sdmesh'; from sdmesh.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            COMPLETE_VAR: "bash_complete",
            "COMP_WORDS": "sdmesh comp",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,completion"]
