"""SmartFrog's shell components: a long-lived interpreter, and scripts run at each phase."""

from __future__ import annotations

import asyncio
import contextlib

from sdmesh.components.context import value
from sdmesh.components.policy import shell_command
from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.model import Node, TerminationRecord
from sdmesh.runner.app import ComponentError, EndedCallback

MAX_OUTPUT = 2000


class ShellComponent:
    """``BashShell``: an interpreter process living as long as the component."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.process: asyncio.subprocess.Process | None = None

    def _command(self) -> list[str]:
        return list(shell_command(self.node.description))

    async def deploy(self) -> None:
        command = self._command()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as error:
            raise ComponentError(f"cannot start {command[0]}: {error.strerror}") from None

    async def start(self) -> None:
        pass

    async def terminate(self, record: TerminationRecord) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class ScriptComponent:
    """``Script``: runs ``deployScript``, ``startScript`` and ``terminateScript`` with bash;
    a failing command fails that phase, with its output in the message."""

    def __init__(self, node: Node, root: Node, ended: EndedCallback) -> None:
        self.node = node
        self.root = root
        self.ended = ended

    def _lines(self, name: str) -> list[str]:
        found = value(self.root, self.node, name)
        if found is None:
            return []
        if isinstance(found, str):
            return [found]
        if isinstance(found, list) and all(isinstance(line, str) for line in found):
            return [str(line) for line in found]
        if isinstance(found, ComponentDescription):
            return [str(attr.value) for attr in found.attrs.values()]
        raise ComponentError(f"{name} must be a String or a Vector of lines")

    async def _run(self, name: str) -> None:
        lines = self._lines(name)
        if not lines:
            return
        script = "set -e\n" + "\n".join(lines) + "\n"
        process = await asyncio.create_subprocess_exec(
            "/bin/bash",
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            tail = output.decode(errors="replace")[-MAX_OUTPUT:].strip()
            raise ComponentError(f"{name} failed with exit code {process.returncode}: {tail}")

    async def deploy(self) -> None:
        await self._run("deployScript")

    async def start(self) -> None:
        await self._run("startScript")
        if value(self.root, self.node, "autoTerminate") is True:
            asyncio.get_running_loop().call_soon(
                self.ended, TerminationRecord.normal_end("script done", self.node.path)
            )

    async def terminate(self, record: TerminationRecord) -> None:
        await self._run("terminateScript")


class InertComponent:
    """A component with nothing to do on one host (e.g. a Scheduler: the mesh places VMs)."""

    async def deploy(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def terminate(self, record: TerminationRecord) -> None:
        pass


class RefusedComponent:
    """A leaf this host will not run (sdmesh.components.policy): its deploy fails with the
    reason, like any deploy failure, so the pool reports it and nothing else happens."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def deploy(self) -> None:
        raise ComponentError(self.reason)

    async def start(self) -> None:
        raise ComponentError(self.reason)

    async def terminate(self, record: TerminationRecord) -> None:
        pass
