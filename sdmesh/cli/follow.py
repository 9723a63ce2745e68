"""Following a pool until it settles: ``submit --wait`` and ``terminate --wait``.

The CLI polls ``GET /v1/pools/{pool}``: a status is complete in itself, so a missed poll loses
nothing, and an agent that is busy or restarting is simply asked again. Each component change
is shown as shared/spec/cli.md asks: a live table on a terminal, one line per change when
stdout is not one, and with ``--json`` one event object per line,
``{"pool", "path", "kind", "state", "host", "domain"}``.

rich is imported only to draw (``status --json`` and line output do without it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TextIO

import click

from sdmesh.cli.client import AgentError, call, fail

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.table import Table

Mode = Literal["live", "lines", "json"]

#: The component states cli.md lets an event carry; others ("created": placed, not yet
#: deployed; "unknown": the agent only has the pool's record) are shown, never emitted.
EVENT_STATES = frozenset(
    ("deploying", "deployed", "starting", "running", "terminating", "terminated", "failed")
)
STYLES = {
    "deploying": "yellow",
    "deployed": "cyan",
    "starting": "yellow",
    "running": "green",
    "terminating": "magenta",
    "terminated": "dim",
    "failed": "bold red",
}
#: How often to ask, and how long an agent may fail to answer before we give up.
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0
#: How long to keep following a pool that reached its goal for its components to catch up: a
#: Parallel with asynchCreateChild runs as soon as it has started its children.
LINGER_SECONDS = 10.0

Fetch = Callable[[str, str, str], Any]


def pool_path(pool: str) -> str:
    """``/v1/pools/{pool}``, the id quoted: whatever it holds stays one path segment."""
    from urllib.parse import quote

    return f"/v1/pools/{quote(pool, safe='')}"


def output_mode(as_json: bool, stream: TextIO) -> Mode:
    """JSON lines when asked; a live table on a terminal; plain lines otherwise."""
    if as_json:
        return "json"
    return "live" if stream.isatty() else "lines"


def changes(
    pool: str, status: Mapping[str, Any], seen: dict[str, tuple[str, str]]
) -> list[dict[str, str]]:
    """The components whose state or host changed since ``seen`` (which is updated), as
    event objects; a VM moved to another host counts as a change, "unknown" (the agent could
    not ask the shepherd this time) does not."""
    out: list[dict[str, str]] = []
    for component in status.get("components", []):
        path, state = str(component["path"]), str(component["state"])
        host = str(component.get("host") or "")
        if state == "unknown" or seen.get(path) == (state, host):
            continue
        seen[path] = (state, host)
        out.append(
            {
                "pool": pool,
                "path": path,
                "kind": str(component.get("kind") or ""),
                "state": state,
                "host": host,
                "domain": str(component.get("domain") or ""),
            }
        )
    return out


def settled(status: Mapping[str, Any], until: tuple[str, ...], goal: str) -> bool:
    """The pool is in a state of ``until`` and, if that is ``goal``, so is every component
    (or it failed, or the agent cannot tell)."""
    state = status.get("state")
    if state not in until:
        return False
    return state != goal or all(
        c["state"] in (goal, "failed", "unknown") for c in status.get("components", [])
    )


def summary(status: Mapping[str, Any], goal: str, elapsed: float) -> str:
    """One line: the pool's state, how many components reached ``goal``, the others by
    state, the shepherd, the generation, the time so far (the reason waits for the end)."""
    if "state" not in status:
        return f"pool {status.get('pool', '?')}: asking the agent... {elapsed:.1f} s"
    components = status.get("components", [])
    counts: dict[str, int] = {}
    for component in components:
        counts[str(component["state"])] = counts.get(str(component["state"]), 0) + 1
    others = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != goal)
    done = f"{counts.get(goal, 0)}/{len(components)} {goal}" + (f" ({others})" if others else "")
    return (
        f"pool {status.get('pool', '?')} {status['state']}: {done}; "
        f"shepherd {status.get('shepherd') or '-'}, generation {status.get('generation', '?')}, "
        f"{elapsed:.1f} s"
    )


def components_table(status: Mapping[str, Any], *, domains: bool = False) -> Table:
    """The components with their kind, host and state (and libvirt domain for ``status``)."""
    from rich.table import Table
    from rich.text import Text

    columns = ["component", "kind", "host", "state"] + (["domain"] if domains else [])
    table = Table(*columns, box=None, pad_edge=False)
    for component in status.get("components", []):
        state = str(component["state"])
        row = [  # Text, not str: a name is never read as rich markup
            Text(str(component["path"])),
            Text(str(component.get("kind") or "")),
            Text(str(component.get("host") or "-")),
            Text(state, style=STYLES.get(state, "")),
        ]
        if domains:
            row.append(Text(str(component.get("domain") or "")))
        table.add_row(*row)
    return table


class PoolView:
    """Shows successive statuses of one pool in ``mode``, on ``stream``."""

    def __init__(
        self,
        pool: str,
        mode: Mode,
        goal: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.mode = mode
        self.goal = goal
        self.stream = sys.stdout if stream is None else stream
        self.clock = clock
        self.started = clock()
        self.seen: dict[str, tuple[str, str]] = {}
        self.known: dict[str, Mapping[str, Any]] = {}
        self.last: Mapping[str, Any] = {"pool": pool, "components": []}
        self._live: Live | None = None

    def __enter__(self) -> PoolView:
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(self._render(), console=console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None

    def show(self, status: Mapping[str, Any]) -> None:
        # An "unknown" component (the agent had only the pool's record this time) keeps what
        # an earlier answer said about it.
        for component in status.get("components", []):
            path = str(component["path"])
            if component["state"] != "unknown" or path not in self.known:
                self.known[path] = component
        status = {**status, "components": list(self.known.values())}
        self.last = status
        for event in changes(self.pool, status, self.seen):
            if self.mode == "json":
                if event["state"] in EVENT_STATES:
                    self._print(json.dumps(event))
            elif self.mode == "lines":
                where = f" on {event['host']}" if event["host"] else ""
                self._print(f"{event['path']}: {event['state']}{where}")
        if self._live is not None:
            self._live.update(self._render())

    def tick(self) -> None:
        """Keep the elapsed time moving between polls."""
        if self._live is not None:
            self._live.update(self._render())

    def finish(self, status: Mapping[str, Any]) -> None:
        """The closing line (not in JSON: the exit status says it)."""
        if self.mode != "json":
            reason = f" ({status['reason']})" if status.get("reason") else ""
            self._print(f"pool {self.pool} {status['state']}{reason}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        components = self.last.get("components", [])
        done = sum(1 for c in components if c["state"] == self.goal)
        line = Table.grid(padding=(0, 1))
        line.add_row(
            ProgressBar(total=max(len(components), 1), completed=done, width=20),
            summary(self.last, self.goal, self.clock() - self.started),
        )
        return Group(components_table(self.last), line)


def follow(
    agent: str,
    pool: str,
    until: tuple[str, ...],
    view: PoolView,
    *,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    poll: float | None = None,
    grace: float | None = None,
) -> Mapping[str, Any]:
    """Poll the pool's status and show it until its state is in ``until`` (and, for the
    view's goal, its components' too, for up to ``LINGER_SECONDS``); its last status.

    An agent that does not answer, fails (5xx) or does not know the pool yet (a submission
    still on its way to the shepherd) is asked again for up to ``grace`` seconds; then the
    error is reported as for any command (exit 1, or 2 for an unknown pool).
    Ctrl-C stops following, not the pool.
    """
    every = POLL_SECONDS if poll is None else poll
    patience = GRACE_SECONDS if grace is None else grace
    get = fetch or (lambda a, m, p: call(a, m, p, timeout=max(patience / 2, 1.0)))
    last_answer = view.clock()
    reached: float | None = None
    status: Mapping[str, Any] = {}
    with view:
        try:
            while True:
                try:
                    status = get(agent, "GET", pool_path(pool))
                except AgentError as error:
                    retry = error.transient or error.http_status == 404
                    if not retry or view.clock() - last_answer > patience:
                        raise
                else:
                    last_answer = view.clock()
                    view.show(status)
                    if status.get("state") not in until:
                        reached = None
                    else:
                        reached = last_answer if reached is None else reached
                        if settled(status, until, view.goal):
                            break
                        if last_answer - reached >= LINGER_SECONDS:
                            break
                for _ in range(max(int(every / 0.25), 1)):  # the clock moves on screen
                    sleep(min(every, 0.25))
                    view.tick()
        except AgentError as error:
            view.__exit__(None, None, None)
            fail(error)
        except KeyboardInterrupt:
            view.__exit__(None, None, None)
            click.echo(
                f"sdmesh: stopped following {pool}; the mesh carries on (sdmesh status {pool})",
                err=True,
            )
            sys.exit(130)
    view.finish(status)
    return status


__all__ = [
    "EVENT_STATES",
    "PoolView",
    "changes",
    "components_table",
    "follow",
    "output_mode",
    "pool_path",
    "settled",
    "summary",
]
