"""``sdmesh events``: follow an agent's live events (``GET /v1/events``).

The agent streams one JSON object per line and a blank line as a heartbeat every 15 s; a
stream silent for much longer than that means the agent or the network is gone.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

import click

from sdmesh.cli.client import AgentError, error_message, fail, not_an_agent, unreachable
from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.cli.mesh import agent_option
from sdmesh.cli.transport import request_url

#: Seconds without a byte (heartbeats included) before the agent counts as gone.
SILENCE_SECONDS = 60.0


def describe(event: dict[str, Any]) -> str:
    """One human line for an event (unknown types shown as their JSON)."""
    stamp = event.get("time")
    when = (
        time.strftime("%H:%M:%S", time.localtime(stamp)) if isinstance(stamp, int | float) else ""
    )
    kind = event.get("type")
    if kind == "component":
        where = f" on {event['host']}" if event.get("host") else ""
        domain = f" (domain {event['domain']})" if event.get("domain") else ""
        text = f"{event.get('pool')}: {event.get('path')} {event.get('state')}{where}{domain}"
    elif kind == "pool":
        generation = event.get("generation")
        details = [f"shepherd {event.get('shepherd') or '-'}"]
        if generation is not None:
            details.append(f"generation {generation}")
        reason = f": {event['reason']}" if event.get("reason") else ""
        text = f"pool {event.get('pool')} {event.get('state')} ({', '.join(details)}){reason}"
    elif kind == "member":
        previous = event.get("previous") or "unknown"
        text = (
            f"member {event.get('name')} ({event.get('address')}) "
            f"{previous} -> {event.get('state')}"
        )
    elif kind == "overflow":
        text = f"... {event.get('dropped')} events lost (read too slowly)"
    else:
        text = json.dumps(event)
    return f"{when} {text}".strip()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON lines.")
@click.option(
    "--backlog",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Start with the last N events the agent kept.",
)
@agent_option
def events(as_json: bool, backlog: int, agent: str) -> None:
    """Follow the agent's live events: members, pools and components, as they change.

    One line per event (with --json, the objects the agent sends, one per line) until
    interrupted (Ctrl-C: exit 0); exits 1 when the agent stops or cannot be reached.
    """
    url = request_url(agent, "/v1/events" + (f"?backlog={backlog}" if backlog else ""))
    call = urllib.request.Request(url, headers={"Accept": "application/x-ndjson"})
    try:
        with _open(call, agent) as stream:
            for raw in stream:
                line = raw.strip()
                if not line:
                    continue  # a heartbeat
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # not ours: a proxy's noise, say
                if as_json:
                    click.echo(line.decode(errors="replace"))
                elif isinstance(event, dict):
                    click.echo(describe(event))
    except KeyboardInterrupt:
        return  # Ctrl-C is how one stops following: not a failure
    except TimeoutError:
        fail(AgentError(f"the agent at {agent} went silent", EXIT_FAILURE))
    except (OSError, http.client.HTTPException) as error:  # IncompleteRead: cut off
        fail(AgentError(f"lost the agent at {agent} ({error})", EXIT_FAILURE))
    fail(AgentError(f"the agent at {agent} closed the stream (it is stopping?)", EXIT_FAILURE))


def _open(call: urllib.request.Request, agent: str) -> Any:
    """The stream, through the CLI's agent client (token, TLS); errors end the command."""
    from sdmesh.cli.agent_client import open_agent

    try:
        return open_agent(call, SILENCE_SECONDS)
    except AgentError as error:
        fail(error)
    except urllib.error.HTTPError as error:
        text = error_message(error.read(), error.code, str(error.reason))
        code = EXIT_BAD_INPUT if 400 <= error.code < 500 else EXIT_FAILURE
        fail(AgentError(f"agent {agent} answered {error.code}: {text}", code))
    except (urllib.error.URLError, OSError, ValueError) as error:
        fail(unreachable(agent, error))
    except http.client.HTTPException as error:  # BadStatusLine, InvalidURL...
        fail(not_an_agent(agent, error))


__all__ = ["describe", "events"]
