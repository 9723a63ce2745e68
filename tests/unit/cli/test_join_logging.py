"""``sdmesh join``'s log: journal lines under systemd, timestamps elsewhere, JSON on request."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.cli.logs import (
    JournalFormatter,
    JsonFormatter,
    TextFormatter,
    choose_format,
    setup_logging,
    stderr_is_journal,
    syslog_priority,
)
from sdmesh.testing.api import free_port

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


def record(
    level: int = logging.WARNING, message: str = "disk %s is slow", **extra: object
) -> logging.LogRecord:
    args = ("vda",) if "%s" in message else ()
    made = logging.LogRecord("sdmesh.agent.pools", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def journal_of(path: Path) -> dict[str, str]:
    """JOURNAL_STREAM as systemd would set it for a stderr that is ``path``."""
    stat = path.stat()
    return {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}


@pytest.fixture
def stderr_file(tmp_path: Path) -> Iterator[tuple[Path, io.TextIOWrapper]]:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        yield path, stream


@pytest.fixture
def clean_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("sdmesh.agent.agent").setLevel(logging.NOTSET)
    logging.captureWarnings(False)


def test_priorities_are_sd_daemons() -> None:
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
    assert [syslog_priority(level) for level in levels] == [7, 6, 4, 3, 2]
    assert syslog_priority(5) == 7 and syslog_priority(45) == 3


def test_auto_is_journal_only_when_stderr_is_the_stream_systemd_named(
    stderr_file: tuple[Path, io.TextIOWrapper], tmp_path: Path
) -> None:
    path, stream = stderr_file
    assert stderr_is_journal(journal_of(path), stream)
    assert choose_format("auto", journal_of(path), stream) == "journal"
    # Inherited by a child whose stderr went elsewhere: not the journal.
    other = tmp_path / "other"
    other.touch()
    assert choose_format("auto", journal_of(other), stream) == "text"
    assert choose_format("auto", {}, stream) == "text"
    assert choose_format("auto", {"JOURNAL_STREAM": "garbage"}, stream) == "text"
    assert choose_format("auto", journal_of(path), io.StringIO()) == "text"  # no file descriptor
    # Asked for explicitly, a format is used wherever stderr goes.
    assert choose_format("json", journal_of(path), stream) == "json"
    assert choose_format("journal", {}, stream) == "journal"
    with pytest.raises(ValueError):
        choose_format("xml", {}, stream)


def test_journal_lines_carry_a_priority_and_no_timestamp() -> None:
    line = JournalFormatter().format(record())
    assert line == "<4>sdmesh.agent.pools: disk vda is slow"


def test_every_line_of_a_traceback_keeps_the_priority() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record(logging.ERROR, "order failed", exc_info=sys.exc_info())
    lines = JournalFormatter().format(failed).splitlines()
    assert lines[0] == "<3>sdmesh.agent.pools: order failed"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_text_lines_start_with_a_readable_timestamp() -> None:
    line = TextFormatter().format(record())
    assert TIMESTAMP.match(line)
    assert line.endswith(" WARNING sdmesh.agent.pools: disk vda is slow")


def test_json_lines_have_the_fields_and_the_extras() -> None:
    entry = json.loads(JsonFormatter().format(record(pool="web", host=Path("/x"))))
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", entry["time"])
    assert entry["level"] == "warning" and entry["logger"] == "sdmesh.agent.pools"
    assert entry["message"] == "disk vda is slow"
    assert entry["pool"] == "web" and entry["host"] == "/x"  # not JSON itself: as text
    assert "args" not in entry and "msg" not in entry and "exception" not in entry
    try:
        raise ValueError("bad")
    except ValueError:
        failed = json.loads(JsonFormatter().format(record(exc_info=sys.exc_info())))
    assert "ValueError: bad" in failed["exception"] and "\n" not in JsonFormatter().format(record())


@pytest.mark.usefixtures("clean_root_logger")
def test_setup_levels_default_to_warnings_and_the_agents_own_lines() -> None:
    out = io.StringIO()
    assert setup_logging("text", None, environ={}, stream=out) == "text"
    logging.getLogger("sdmesh.agent.agent").info("agent up")
    logging.getLogger("sdmesh.agent.pools").info("chatty")
    logging.getLogger("sdmesh.agent.pools").warning("careful")
    text = out.getvalue()
    assert "agent up" in text and "careful" in text and "chatty" not in text

    out = io.StringIO()
    setup_logging("json", "error", environ={}, stream=out)
    logging.getLogger("sdmesh.agent.agent").warning("hidden")
    logging.getLogger("sdmesh.x").error("shown")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["shown"]
    assert len(logging.getLogger().handlers) == 1  # replaced, not added to


def join_stderr(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``sdmesh join`` that fails at once (no key file): what it wrote on stderr."""
    stderr = tmp_path / "join.stderr"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SDMESH_", "JOURNAL_"))}
    with stderr.open("w") as stream:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sdmesh",
                "join",
                "--key-file",
                str(tmp_path / "missing.key"),
                *args,
            ],
            stderr=stream,
            env={**environ, **(env or {}), **(journal_of(stderr) if env is None else {})},
            check=False,
            timeout=60,
        )
    assert done.returncode == 2
    return stderr.read_text()


def test_join_under_systemd_writes_journal_lines(tmp_path: Path) -> None:
    text = join_stderr(tmp_path)
    assert text.startswith("<3>sdmesh.join: ") and "missing.key" in text


def test_join_in_a_terminal_writes_timestamps_and_json_on_request(tmp_path: Path) -> None:
    assert TIMESTAMP.match(join_stderr(tmp_path, env={}))
    entry = json.loads(join_stderr(tmp_path, "--log-format", "json"))
    assert entry["level"] == "error" and entry["logger"] == "sdmesh.join"
    entry = json.loads(join_stderr(tmp_path, env={"SDMESH_LOG_FORMAT": "json"}))
    assert "missing.key" in entry["message"]


def test_an_agent_that_cannot_start_says_why_in_one_record_of_the_chosen_format(
    tmp_path: Path,
) -> None:
    """Every line is in the format (a log shipper's parser sees no stray text), exit 1."""
    key = tmp_path / "cluster.key"
    subprocess.run(
        [sys.executable, "-m", "sdmesh", "keygen", str(key)], check=True, capture_output=True
    )
    no_libvirtd = f"qemu+unix:///system?socket={tmp_path}/none.sock"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sdmesh", "join", "--name", "b", "--key-file", str(key)),
            *("--bind", f"127.0.0.1:{free_port(pair=True)}", "--api", "127.0.0.1:0"),
            *("--state-dir", str(tmp_path / "s")),
            *("--hypervisor", no_libvirtd, "--log-format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries[-1]["level"] == "critical" and "cannot connect" in entries[-1]["message"]
    assert "exception" not in entries[-1]  # the traceback is for --log-level debug
