"""The CLI's side of an agent's control API: one JSON request, failures as ``AgentError``.

Commands turn an ``AgentError`` into one line and cli.md's exit code (``call_or_exit``);
``--wait`` loops look at it first, to ride out a moment when the agent is busy.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click

from sdmesh.cli.agent_client import open_agent
from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.cli.errors import AgentError
from sdmesh.cli.transport import request_url

#: Longest error text taken from a body that is not the agent's (an HTML page from a proxy).
MAX_FOREIGN_ERROR_CHARS = 160


def error_message(raw: bytes, status: int, reason: str) -> str:
    """What an error answer says: a ``{"error": ...}`` body's message; the agent's own text
    (multi-line for descriptor diagnostics); an HTML page (a proxy's, a web server's) cut to
    one short line, its title if it has one."""
    text = raw.decode(errors="replace").strip()
    try:
        parsed = json.loads(text) if text.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    if text.startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        shown = " ".join((title.group(1) if title else "").split())
        line = f"HTTP {status} {reason}: an HTML page" + (f" ({shown})" if shown else "")
        return _short(line + "; is the URL an sdmesh agent's API?")
    return text or f"HTTP {status} {reason}"


def _short(line: str) -> str:
    if len(line) <= MAX_FOREIGN_ERROR_CHARS:
        return line
    return line[: MAX_FOREIGN_ERROR_CHARS - 3] + "..."


def call(
    agent: str, method: str, path: str, body: object | None = None, timeout: float = 30.0
) -> Any:
    """One request; the answer's JSON. The agent's own message is kept for 4xx/5xx answers
    (a 4xx is the user's input: exit 2), and the URL is named when it cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        request_url(agent, path),
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )
    try:
        with open_agent(request, timeout) as response:  # with --token and --ca
            payload = response.read()
    except urllib.error.HTTPError as error:
        try:
            raw = error.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        if error.code == 413:
            raise AgentError(too_large(agent), EXIT_BAD_INPUT, 413) from None
        text = error_message(raw, error.code, str(error.reason))
        code = EXIT_BAD_INPUT if 400 <= error.code < 500 else EXIT_FAILURE
        raise AgentError(text, code, error.code) from None
    except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: a bad URL
        raise unreachable(agent, error) from None
    except http.client.HTTPException as error:  # BadStatusLine, InvalidURL, IncompleteRead...
        raise not_an_agent(agent, error) from None
    try:
        return json.loads(payload or b"null")
    except ValueError:
        raise AgentError(
            f"{agent} answered {method} {path} with something that is not JSON; "
            "is it an sdmesh agent's control API?",
            EXIT_FAILURE,
            200,
        ) from None


def unreachable(agent: str, error: Exception) -> AgentError:
    """No answer from ``agent``: exit 1, naming the URL."""
    reason = getattr(error, "reason", error)
    return AgentError(
        f"cannot reach the agent at {agent} ({reason}); is 'sdmesh join' running there? "
        "(--agent URL or SDMESH_AGENT picks another)",
        EXIT_FAILURE,
    )


def not_an_agent(agent: str, error: http.client.HTTPException) -> AgentError:
    """An answer that is not HTTP as an agent speaks it (or a URL http.client refuses):
    exit 1, naming the URL, as for an agent that cannot be reached."""
    detail = str(error) or type(error).__name__
    return AgentError(
        f"the agent at {agent} is unreachable or not an sdmesh agent "
        f"({type(error).__name__}: {_short(detail)}); check --agent URL (or SDMESH_AGENT)",
        EXIT_FAILURE,
    )


def too_large(agent: str) -> str:
    from sdmesh.agent.api_input import MAX_REQUEST_BYTES

    return (
        f"the agent at {agent} refused the request as too large (413): it accepts up to "
        f"{MAX_REQUEST_BYTES // (1024 * 1024)} MiB, the resolved descriptor included; split "
        "the pool into smaller ones"
    )


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


__all__ = [
    "AgentError",
    "call",
    "call_or_exit",
    "error_message",
    "fail",
    "not_an_agent",
    "unreachable",
]
