"""``sdmesh events``: human lines, --json lines, and the end of the stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from sdmesh.cli.events import describe, events

EVENTS = [
    {"type": "member", "name": "b", "address": "10.0.0.2:7946", "state": "alive", "previous": None},
    {
        "type": "pool",
        "pool": "p",
        "state": "running",
        "shepherd": "a",
        "generation": 2,
        "reason": "",
    },
    {
        "type": "component",
        "pool": "p",
        "path": "sfConfig:vm",
        "kind": "KvmDomain",
        "state": "running",
        "host": "b",
        "domain": "sdm-p",
    },
    {"type": "overflow", "dropped": 4},
]


class Stream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for event in EVENTS:
            self.wfile.write(b"\n")  # heartbeats in between are skipped
            self.wfile.write(json.dumps(event).encode() + b"\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def agent() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.paths  # type: ignore[attr-defined]
    server.shutdown()


def test_json_lines_as_the_agent_sent_them(agent: tuple[str, list[str]]) -> None:
    url, paths = agent
    done = CliRunner().invoke(events, ["--json", "--backlog", "5", "--agent", url])
    lines = done.stdout.splitlines()
    assert [json.loads(line) for line in lines] == EVENTS
    assert paths == ["/v1/events?backlog=5"]
    assert done.exit_code == 1 and "closed the stream" in done.stderr


def test_one_human_line_per_event(agent: tuple[str, list[str]]) -> None:
    url, _ = agent
    done = CliRunner().invoke(events, ["--agent", url])
    assert done.stdout.splitlines() == [
        "member b (10.0.0.2:7946) unknown -> alive",
        "pool p running (shepherd a, generation 2)",
        "p: sfConfig:vm running on b (domain sdm-p)",
        "... 4 events lost (read too slowly)",
    ]


def test_an_unreachable_agent_is_one_line_and_exit_1() -> None:
    done = CliRunner().invoke(events, ["--agent", "http://127.0.0.1:1"])
    assert done.exit_code == 1
    assert "cannot reach the agent" in done.stderr


def test_times_are_shown_when_present() -> None:
    line = describe(
        {
            "type": "pool",
            "pool": "p",
            "state": "failed",
            "shepherd": "a",
            "reason": "x",
            "time": 0.0,
        }
    )
    assert line.endswith("pool p failed (shepherd a): x") and line[2] == ":"
