"""How ``sdmesh join`` writes its log: for the journal, for people, or for log shippers.

Under systemd, stderr is connected to the journal, which stamps every line itself and reads a
``<N>`` prefix as the line's syslog priority (sd-daemon(3)): timestamps there are noise and
the prefix makes ``journalctl -p warning`` work. Elsewhere a person reads the lines, so they
carry a readable timestamp. ``--log-format json`` is one object per line for log shippers.

Standard library only: ``sdmesh join`` sets logging up before anything heavy is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["text", "journal", "json"]

#: ``--log-format`` values; ``auto`` is ``journal`` when stderr is the journal, else ``text``.
FORMATS = ("auto", "text", "journal", "json")
LEVELS = ("debug", "info", "warning", "error")

#: Syslog priorities (sd-daemon(3)'s SD_DEBUG... SD_CRIT) for Python's levels.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

#: What every LogRecord has; anything else was passed with ``extra=`` and goes into JSON.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


#: Control characters as visible escapes: a newline in a message (a pool name, a peer's
#: error text...) would otherwise start a line of the log's own, forged to look like ours.
_ESCAPES = {code: f"\\x{code:02x}" for code in range(32) if code != 9} | {
    10: "\\n",
    13: "\\r",
    127: "\\x7f",
}


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped (tabs kept)."""
    return text.translate(_ESCAPES)


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python log level (DEBUG and below: 7)."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def stderr_is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when ``stream`` is the journal: systemd sets ``JOURNAL_STREAM`` to the device
    and inode of the stream it connected, and a child whose stderr was redirected elsewhere
    inherits the variable, so the stream itself must match (systemd.exec(5))."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def choose_format(requested: str, environ: Mapping[str, str], stream: TextIO) -> LogFormat:
    """Resolve ``auto``: the journal's format under systemd, readable text elsewhere."""
    if requested == "auto":
        return "journal" if stderr_is_journal(environ, stream) else "text"
    if requested not in ("text", "journal", "json"):
        raise ValueError(f"unknown log format {requested!r}")
    return requested  # type: ignore[return-value]


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``; every line of a multi-line message (a traceback) gets the
    prefix, since the journal splits the stream into entries at newlines. The message itself
    is one line (newlines escaped), so it cannot start entries of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = f"{record.name}: {super().format(record)}"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00.123 WARNING logger: message``, local time, for people. The
    message's newlines are escaped (a traceback still follows on lines of its own), so text
    from elsewhere cannot forge log lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
        )


class JsonFormatter(logging.Formatter):
    """One object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then
    the record's ``extra=`` fields, and ``exception`` with the traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    "text": TextFormatter,
    "journal": JournalFormatter,
    "json": JsonFormatter,
}


def setup_logging(
    log_format: str = "auto",
    level: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> LogFormat:
    """Log to ``stream`` (stderr) in the chosen format; returns the format used.

    Without ``level``, warnings and up, plus the agent's own start-up and membership lines
    (``sdmesh.agent.agent`` at info): quiet, yet an operator sees the agent come up. The
    audit trail (``sdmesh.audit``) is always at info.
    """
    stream = sys.stderr if stream is None else stream
    chosen = choose_format(log_format, os.environ if environ is None else environ, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(FORMATTERS[chosen]())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)  # Python's warnings too, in the same format
    root.setLevel(logging.WARNING if level is None else level.upper())
    agent = logging.getLogger("sdmesh.agent.agent")
    agent.setLevel(logging.INFO if level is None else logging.NOTSET)
    # The audit trail (sdmesh/agent/audit.py) is written whatever the level: who changed what.
    logging.getLogger("sdmesh.audit").setLevel(logging.INFO)
    return chosen


__all__ = [
    "FORMATS",
    "LEVELS",
    "JournalFormatter",
    "JsonFormatter",
    "TextFormatter",
    "choose_format",
    "setup_logging",
    "stderr_is_journal",
    "syslog_priority",
]
