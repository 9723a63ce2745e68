"""Showing component state changes: a live table on a terminal, lines or JSON otherwise.

shared/spec/cli.md: long operations show progress on a terminal and stay quiet and
line-oriented when stdout is not one; with ``--json`` they print one object per state change:
``{"pool", "path", "kind", "state", "host", "domain"}``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sdmesh.lifecycle.model import State, StateChanged

_STYLES = {
    State.DEPLOYING: "yellow",
    State.DEPLOYED: "cyan",
    State.STARTING: "yellow",
    State.RUNNING: "green",
    State.TERMINATING: "magenta",
    State.TERMINATED: "dim",
    State.FAILED: "bold red",
}


@dataclass
class ComponentView:
    path: str
    kind: str
    state: State
    since: float
    domain: str | None = None
    detail: str = ""


@dataclass
class Progress:
    """Collects state changes and renders them in the mode the output calls for."""

    pool: str
    host: str
    json_lines: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    components: dict[str, ComponentView] = field(default_factory=dict)
    _live: Live | None = None

    @property
    def interactive(self) -> bool:
        return not self.json_lines and self.stream.isatty()

    def __enter__(self) -> Progress:
        if self.interactive:
            console = Console(file=self.stream)
            self._live = Live(self._table(), console=console, refresh_per_second=8)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def domain_of(self, path: str, domain: str) -> None:
        """Record the hypervisor domain name of a VM component, for display and JSON."""
        view = self.components.get(path)
        if view is not None:
            view.domain = domain

    def __call__(self, change: StateChanged) -> None:
        view = self.components.get(change.path)
        if view is None:
            view = ComponentView(change.path, change.kind, change.state, time.monotonic())
            self.components[change.path] = view
        view.state = change.state
        view.since = time.monotonic()
        if change.state is State.FAILED and change.record is not None:
            view.detail = change.record.description
        if self.json_lines:
            print(json.dumps(self.event(view)), file=self.stream, flush=True)
        elif self._live is not None:
            self._live.update(self._table())
        else:
            suffix = f" ({view.detail})" if view.detail and change.state is State.FAILED else ""
            print(f"{change.path}: {change.state.value}{suffix}", file=self.stream, flush=True)

    def event(self, view: ComponentView) -> dict[str, object]:
        return {
            "pool": self.pool,
            "path": view.path,
            "kind": view.kind,
            "state": view.state.value,
            "host": self.host,
            "domain": view.domain,
        }

    def _table(self) -> Table:
        table = Table(title=f"pool {self.pool} on {self.host}", expand=False)
        for column in ("component", "kind", "state", "domain", ""):
            table.add_column(column)
        for view in self.components.values():
            style = _STYLES.get(view.state, "")
            table.add_row(
                view.path,
                view.kind,
                f"[{style}]{view.state.value}[/]" if style else view.state.value,
                view.domain or "",
                view.detail,
            )
        return table
