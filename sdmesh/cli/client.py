"""The CLI's side of an agent's control API: one JSON request, failures as ``AgentError``.

Commands turn an ``AgentError`` into one line and cli.md's exit code (``call_or_exit``);
``--wait`` loops look at it first, to ride out a moment when the agent is busy.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click

from sdmesh.cli.agent_client import open_agent
from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE


class AgentError(Exception):
    """A call to the agent failed; ``exit_code`` is what cli.md makes of it."""

    def __init__(self, message: str, exit_code: int, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.http_status = http_status

    @property
    def unreachable(self) -> bool:
        return self.http_status is None

    @property
    def transient(self) -> bool:
        """Worth asking again: no answer at all, or the agent failed (5xx, e.g. starting)."""
        return self.http_status is None or self.http_status >= 500


def call(
    agent: str, method: str, path: str, body: object | None = None, timeout: float = 30.0
) -> Any:
    """One request; the answer's JSON. The agent's own message is kept for 4xx/5xx answers
    (a 4xx is the user's input: exit 2), and the URL is named when it cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        agent.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )
    try:
        with open_agent(request, timeout) as response:  # with --token and --ca
            payload = response.read()
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace").strip() or str(error.reason)
        code = EXIT_BAD_INPUT if 400 <= error.code < 500 else EXIT_FAILURE
        raise AgentError(text, code, error.code) from None
    except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: a bad URL
        reason = getattr(error, "reason", error)
        raise AgentError(
            f"cannot reach the agent at {agent} ({reason}); is 'sdmesh join' running there? "
            "(--agent URL or SDMESH_AGENT picks another)",
            EXIT_FAILURE,
        ) from None
    try:
        return json.loads(payload or b"null")
    except ValueError:
        raise AgentError(
            f"{agent} answered {method} {path} with something that is not JSON; "
            "is it an sdmesh agent's control API?",
            EXIT_FAILURE,
            200,
        ) from None


def fail(error: AgentError) -> NoReturn:
    """Print the error as one line and exit with its code (never a traceback)."""
    click.echo(f"sdmesh: error: {error.message}", err=True)
    sys.exit(error.exit_code)


def call_or_exit(
    agent: str, method: str, path: str, body: object | None = None, timeout: float = 30.0
) -> Any:
    try:
        return call(agent, method, path, body, timeout)
    except AgentError as error:
        fail(error)


__all__ = ["AgentError", "call", "call_or_exit", "fail"]
