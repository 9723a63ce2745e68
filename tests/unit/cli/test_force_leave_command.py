"""``sdmesh force-leave NODE`` against a scripted agent: output, --json, and cli.md's exit
codes with the agent's reason as one line."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from sdmesh.cli.main import cli

from .fake_agent import FakeAgent, Routes, closed_port_url

LEFT = {"name": "h3", "outcome": "left", "state": "left", "incarnation": 2}


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def test_a_failed_member_is_forced_out() -> None:
    routes: Routes = {("POST", "/v1/peers/h3/force-leave"): lambda _: (200, LEFT)}
    with FakeAgent(routes) as agent:
        result = run("force-leave", "h3", "--agent", agent.url)
        assert result.exit_code == 0
        assert result.stdout == "h3: forced out; every member will count it as left\n"
        result = run("force-leave", "h3", "--agent", agent.url, "--json")
        assert result.exit_code == 0 and json.loads(result.stdout) == LEFT
        assert [r[:2] for r in agent.requests] == [("POST", "/v1/peers/h3/force-leave")] * 2


def test_forcing_out_a_member_that_already_left_succeeds() -> None:
    answer = {**LEFT, "outcome": "already-left"}
    routes: Routes = {("POST", "/v1/peers/h3/force-leave"): lambda _: (200, answer)}
    with FakeAgent(routes) as agent:
        result = run("force-leave", "h3", "--agent", agent.url)
        assert result.exit_code == 0 and "already left" in result.stdout


def test_an_alive_or_unknown_member_exits_2_with_the_agents_reason() -> None:
    alive = "h3 is alive; only failed members can be forced out"
    routes: Routes = {
        ("POST", "/v1/peers/h3/force-leave"): lambda _: (409, alive),
        ("POST", "/v1/peers/zz/force-leave"): lambda _: (404, "zz is not a member"),
    }
    with FakeAgent(routes) as agent:
        result = run("force-leave", "h3", "--agent", agent.url)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == f"sdmesh: error: {alive}\n"
        result = run("force-leave", "zz", "--agent", agent.url, "--json")
        assert result.exit_code == 2 and "zz is not a member" in result.stderr


def test_a_name_is_sent_as_one_path_segment() -> None:
    with FakeAgent({}) as agent:
        run("force-leave", "a/b c", "--agent", agent.url)
        assert agent.requests[0][1] == "/v1/peers/a%2Fb%20c/force-leave"


def test_an_unreachable_or_leaving_agent_exits_1() -> None:
    result = run("force-leave", "h3", "--agent", closed_port_url())
    assert result.exit_code == 1 and "cannot reach the agent" in result.stderr
    routes: Routes = {
        ("POST", "/v1/peers/h3/force-leave"): lambda _: (503, "this agent is leaving")
    }
    with FakeAgent(routes) as agent:
        result = run("force-leave", "h3", "--agent", agent.url)
        assert result.exit_code == 1 and "leaving" in result.stderr
