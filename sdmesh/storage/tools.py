"""Running the host tools backends rely on (qemu-img, lvcreate, ...) without blocking the loop."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sdmesh.storage.errors import StorageUnavailable, ToolFailed

#: Debian package that provides each tool, named in "missing tool" errors.
DEBIAN_PACKAGES = {
    "qemu-img": "qemu-utils",
    "lvcreate": "lvm2",
    "lvremove": "lvm2",
    "lvs": "lvm2",
}


@dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Awaitable[ToolResult]]


def missing_tool_error(tool: str) -> StorageUnavailable:
    package = DEBIAN_PACKAGES.get(tool)
    hint = f"install it: apt-get install {package}" if package else "install it and retry"
    return StorageUnavailable(f"{tool} is not installed on this host", hint=hint)


def require_tool(tool: str) -> str:
    """Absolute path of ``tool`` or a StorageUnavailable naming the package to install."""
    found = shutil.which(tool)
    if found is None:
        raise missing_tool_error(os.path.basename(tool))
    return found


async def run_tool(argv: Sequence[str]) -> ToolResult:
    """Run a tool with a C locale (stable messages to parse) and capture its output."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError as exc:
        raise missing_tool_error(os.path.basename(argv[0])) from exc
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return ToolResult(
        tuple(argv),
        process.returncode,
        stdout.decode(errors="replace"),
        stderr.decode("utf-8", "replace"),
    )


def check_result(result: ToolResult, action: str, *, hint: str | None = None) -> ToolResult:
    """Turn a non-zero exit into a ToolFailed that quotes the tool's own words."""
    if result.returncode != 0:
        words = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
        raise ToolFailed(f"{action} failed: {' '.join(result.argv[:2])}: {words}", hint=hint)
    return result
