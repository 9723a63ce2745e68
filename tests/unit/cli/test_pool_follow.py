"""submit/terminate --wait and status against a scripted agent: the three output modes,
cli.md's event objects, exit codes, and errors as one line (never a traceback)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sdmesh.cli import follow as follow_module
from sdmesh.cli.client import AgentError
from sdmesh.cli.follow import EVENT_STATES, PoolView, changes, follow, output_mode, summary
from sdmesh.cli.main import COMMANDS, cli

from .fake_agent import FakeAgent, closed_port_url, pool_status, statuses

EXAMPLES = Path(__file__).resolve().parents[3] / "descriptors" / "examples"
EVENT_KEYS = {"pool", "path", "kind", "state", "host", "domain"}


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(follow_module, "GRACE_SECONDS", 0.5)


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


DEPLOYING = pool_status(
    "p", "deploying", ("sfConfig:disk", "h2", "created"), ("sfConfig:vm", "h2", "created")
)
HALFWAY = pool_status(
    "p", "deploying", ("sfConfig:disk", "h2", "running"), ("sfConfig:vm", "h2", "starting")
)
RUNNING = pool_status(
    "p", "running", ("sfConfig:disk", "h2", "running"), ("sfConfig:vm", "h2", "running")
)


def follow_answers(view: PoolView, *answers: Any, **options: Any) -> Any:
    """``follow`` fed with scripted answers (an exception is raised); the last is repeated."""
    queue = list(answers)

    def fetch(*_: Any) -> Any:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return follow(
        "http://agent", "p", ("running",), view, fetch=fetch, sleep=lambda _: None, **options
    )


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    routes = {
        ("POST", "/v1/pools"): lambda body: (
            201,
            {"pool": body["name"], "shepherd": "h1", "digest": "d"},
        ),
        ("GET", "/v1/pools/p"): statuses(DEPLOYING, HALFWAY, RUNNING),
    }
    with FakeAgent(routes) as fake:
        yield fake


# ------------------------------------------------------------------------- the pure parts
def test_changes_reports_new_states_and_moves_once() -> None:
    seen: dict[str, tuple[str, str]] = {}
    first = changes("p", DEPLOYING, seen)
    assert [(e["path"], e["state"], e["host"]) for e in first] == [
        ("sfConfig:disk", "created", "h2"),
        ("sfConfig:vm", "created", "h2"),
    ]
    assert all(set(e) == EVENT_KEYS for e in first)
    assert changes("p", DEPLOYING, seen) == []
    moved = pool_status(
        "p", "deploying", ("sfConfig:disk", "h2", "created"), ("sfConfig:vm", "h3", "created")
    )
    assert [(e["path"], e["host"]) for e in changes("p", moved, seen)] == [("sfConfig:vm", "h3")]
    unknown = pool_status(
        "p", "deploying", ("sfConfig:disk", "h2", "unknown"), ("sfConfig:vm", "h3", "unknown")
    )
    assert changes("p", unknown, seen) == []  # the agent could not ask the shepherd: no news


def test_an_answer_from_the_record_alone_keeps_what_was_known() -> None:
    unknown = pool_status(
        "p", "deploying", ("sfConfig:disk", "h2", "unknown"), ("sfConfig:vm", "h2", "unknown")
    )
    out = io.StringIO()
    follow_answers(
        PoolView("p", "lines", "running", stream=out), unknown, HALFWAY, unknown, RUNNING
    )
    assert out.getvalue().splitlines() == [
        "sfConfig:disk: running on h2",
        "sfConfig:vm: starting on h2",
        "sfConfig:vm: running on h2",
        "pool p running",
    ]


def test_summary_counts_the_goal_and_the_rest() -> None:
    line = summary(HALFWAY, "running", 3.25)
    assert line == "pool p deploying: 1/2 running (1 starting); shepherd h1, generation 1, 3.2 s"


def test_output_mode_follows_the_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert output_mode(False, Tty()) == "live"
    assert output_mode(False, io.StringIO()) == "lines"
    assert output_mode(True, Tty()) == "json"


def test_live_mode_draws_a_table_with_a_summary_line() -> None:
    out = io.StringIO()
    view = PoolView("p", "live", "running", stream=out)
    follow_answers(view, HALFWAY, RUNNING)
    text = out.getvalue()
    for word in ("component", "kind", "host", "state", "sfConfig:vm", "KvmDomain", "h2"):
        assert word in text
    assert "pool p running: 2/2 running; shepherd h1, generation 1" in text
    assert text.rstrip().endswith("pool p running")


def test_a_running_pool_is_followed_until_its_components_catch_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An asynchronous Parallel runs once it has started its children: wait for them too."""
    early = pool_status(
        "p", "running", ("sfConfig:disk", "h2", "running"), ("sfConfig:vm", "h2", "starting")
    )
    out = io.StringIO()
    follow_answers(PoolView("p", "lines", "running", stream=out), early, RUNNING)
    assert "sfConfig:vm: running on h2" in out.getvalue().splitlines()

    monkeypatch.setattr(follow_module, "LINGER_SECONDS", 5.0)
    clock = iter(range(0, 1000))  # one second per look at the clock
    view = PoolView("p", "lines", "running", stream=io.StringIO(), clock=lambda: next(clock))
    final = follow_answers(view, early)
    assert final is early  # a component stuck starting does not hold the command forever


def test_transient_failures_are_retried_then_reported() -> None:
    out = io.StringIO()
    final = follow_answers(
        PoolView("p", "lines", "running", stream=out),
        AgentError("cannot reach the agent at http://agent", 1),
        AgentError("starting", 1, 503),
        AgentError("unknown pool 'p'", 2, 404),
        RUNNING,
        grace=5,
    )
    assert final["state"] == "running"

    clock = iter(range(0, 1000, 10))  # every call 10 s later: past the grace at once
    view = PoolView("p", "lines", "running", stream=out, clock=lambda: next(clock))
    with pytest.raises(SystemExit) as exited:
        follow_answers(view, AgentError("gone", 1), grace=5)
    assert exited.value.code == 1


# ------------------------------------------------------------------------- the commands
def test_submit_wait_prints_one_line_per_change_when_not_a_terminal(agent: FakeAgent) -> None:
    result = run(
        "submit", str(EXAMPLES / "demoPool.sf"), "--name", "p", "--wait", "--agent", agent.url
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "p"
    assert "sfConfig:vm: created on h2" in lines
    assert "sfConfig:vm: starting on h2" in lines
    assert "sfConfig:vm: running on h2" in lines
    assert lines[-1] == "pool p running"
    assert "\x1b[" not in result.stdout  # no colours, no cursor movement


def test_submit_wait_json_prints_cli_md_events_only(agent: FakeAgent) -> None:
    result = run(
        "submit",
        str(EXAMPLES / "demoPool.sf"),
        "--name",
        "p",
        "--wait",
        "--json",
        "--agent",
        agent.url,
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and all(set(e) == EVENT_KEYS for e in events)
    assert all(e["state"] in EVENT_STATES for e in events)  # "created" is not an event state
    assert [e["state"] for e in events if e["path"] == "sfConfig:vm"] == ["starting", "running"]
    assert {
        "pool": "p",
        "path": "sfConfig:vm",
        "kind": "KvmDomain",
        "state": "running",
        "host": "h2",
        "domain": "sdm-p-vm",
    } in events


def test_submit_wait_exits_1_when_the_pool_fails() -> None:
    failed = pool_status("p", "failed", ("sfConfig:vm", "h2", "failed"))
    failed["reason"] = "no host can take sfConfig:vm"
    routes = {
        ("POST", "/v1/pools"): lambda body: (201, {"pool": "p", "shepherd": "h1", "digest": "d"}),
        ("GET", "/v1/pools/p"): statuses(failed),
    }
    with FakeAgent(routes) as fake:
        result = run(
            "submit",
            str(EXAMPLES / "demoPool.sf"),
            "--name",
            "p",
            "--wait",
            "--json",
            "--agent",
            fake.url,
        )
    assert result.exit_code == 1
    assert "sdmesh: error: pool p failed: no host can take sfConfig:vm" in result.stderr


def test_terminate_wait_follows_until_terminated_with_json_events() -> None:
    routes = {
        ("DELETE", "/v1/pools/p"): lambda _: (
            202,
            {"pool": "p", "state": "terminating", "shepherd": "h1"},
        ),
        ("GET", "/v1/pools/p"): statuses(
            RUNNING,
            pool_status(
                "p",
                "terminating",
                ("sfConfig:disk", "h2", "running"),
                ("sfConfig:vm", "h2", "terminated"),
            ),
            pool_status(
                "p",
                "terminated",
                ("sfConfig:disk", "h2", "terminated"),
                ("sfConfig:vm", "h2", "terminated"),
            ),
        ),
    }
    with FakeAgent(routes) as fake:
        result = run("terminate", "p", "--wait", "--json", "--agent", fake.url)
        lines = run("terminate", "p", "--wait", "--agent", fake.url)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["state"] for e in events if e["path"] == "sfConfig:vm"][-1] == "terminated"
    assert lines.exit_code == 0 and lines.stdout.splitlines()[-1] == "pool p terminated"


def test_unknown_pool_exits_2_with_the_agents_message() -> None:
    routes = {
        ("GET", "/v1/pools/nope"): lambda _: (404, "unknown pool 'nope'"),
        ("DELETE", "/v1/pools/nope"): lambda _: (404, "unknown pool 'nope'"),
    }
    with FakeAgent(routes) as fake:
        for args in (
            ("status", "nope"),
            ("terminate", "nope", "--wait"),
            ("status", "nope", "--json"),
        ):
            result = run(*args, "--agent", fake.url)
            assert result.exit_code == 2, args
            assert result.stderr == "sdmesh: error: unknown pool 'nope'\n"


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "p", "--json"),
        ("terminate", "p", "--wait"),
        ("peers",),
        ("submit", str(EXAMPLES / "demoPool.sf"), "--wait"),
    ],
)
def test_an_unreachable_agent_exits_1_naming_its_url(args: tuple[str, ...]) -> None:
    url = closed_port_url()
    result = run(*args, "--agent", url)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"sdmesh: error: cannot reach the agent at {url} (")
    assert len(result.stderr.splitlines()) == 1


def test_an_answer_that_is_not_json_is_an_error_not_a_traceback() -> None:
    with FakeAgent({("GET", "/v1/pools"): lambda _: (200, "<html>hello</html>")}) as fake:
        result = run("status", "--agent", fake.url)
    assert result.exit_code == 1 and "is not JSON" in result.stderr


def test_status_table_is_not_cut_when_not_a_terminal(agent: FakeAgent) -> None:
    long = pool_status(
        "p",
        "running",
        (
            "sfConfig:pool:smartDomain1:domain1:" + "x" * 60 + ":vm",
            "host-with-a-long-name",
            "running",
        ),
    )
    with FakeAgent({("GET", "/v1/pools/p"): statuses(long)}) as fake:
        result = run("status", "p", "--agent", fake.url)
    assert result.exit_code == 0
    assert long["components"][0]["path"] in result.stdout
    assert "host-with-a-long-name" in result.stdout and "sdm-p-vm" in result.stdout


#: Commands that print no state: a script, the agent's own log, a key file; ``operator`` is
#: a group (its ``list`` has --json: tests/unit/cli/test_operator_command.py), and so is
#: ``ca`` (its ``revoke`` has --json).
NO_STATE = {"ca", "completion", "join", "keygen", "operator"}


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - NO_STATE))
def test_every_command_that_prints_state_has_json(name: str) -> None:
    if name == "token":  # a group: each of its commands
        for sub in ("create", "list", "revoke"):
            assert "--json" in run(name, sub, "--help").stdout, sub
        return
    result = run(name, "--help")
    assert "--json" in result.stdout
