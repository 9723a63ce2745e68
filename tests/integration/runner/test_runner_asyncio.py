"""The asyncio runner with stand-in components: real tasks, timers and signals of life."""

from __future__ import annotations

import asyncio

from sdmesh.language import resolve_text
from sdmesh.lifecycle.model import Node, StateChanged, TerminationRecord
from sdmesh.runner.app import ApplicationRunner, ComponentError, EndedCallback

LIB = '#include "sdmesh/components.sf"\n'


class FakeComponent:
    def __init__(self, node: Node, log: list[str], ended: EndedCallback) -> None:
        self.node, self.log, self.ended = node, log, ended

    async def deploy(self) -> None:
        await asyncio.sleep(0.01)
        if self.node.description.get("failDeploy") is True:
            raise ComponentError("cannot create disk: no space left")
        self.log.append(f"deploy {self.node.name}")

    async def start(self) -> None:
        await asyncio.sleep(0.01)
        self.log.append(f"start {self.node.name}")
        die_after = self.node.description.get("dieAfter")
        if isinstance(die_after, int):
            asyncio.get_running_loop().call_later(
                die_after / 1000, self.ended, TerminationRecord.abnormal("domain crashed")
            )

    async def terminate(self, record: TerminationRecord) -> None:
        self.log.append(f"terminate {self.node.name}")


def runner_for(text: str) -> tuple[ApplicationRunner, list[str], list[StateChanged]]:
    log: list[str] = []
    states: list[StateChanged] = []
    root = resolve_text(LIB + text, "t.sf").root
    runner = ApplicationRunner(
        root, lambda node, _root, _made, ended: FakeComponent(node, log, ended), states.append
    )
    return runner, log, states


def vm(name: str, extra: str = "") -> str:
    return f'{name} extends Prim {{ sfClass "test.Fake"; {extra} }}'


async def test_runs_until_terminated_and_cleans_up() -> None:
    runner, log, states = runner_for(
        f"sfConfig extends Compound {{ sfSyncTerminate true; {vm('a')} {vm('b')} }}"
    )
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    assert log == ["deploy a", "deploy b", "start a", "start b"]
    runner.terminate(TerminationRecord.normal_end("Ctrl-C"))
    record = await asyncio.wait_for(task, 5)
    assert record.normal and log[-2:] == ["terminate b", "terminate a"]
    assert states[-1].path == "sfConfig" and states[-1].state.value == "terminated"


async def test_a_crash_propagates_and_everything_is_released() -> None:
    runner, log, _ = runner_for(
        "sfConfig extends Compound { pool extends Parallel { asynchCreateChild true; "
        f"{vm('a', 'dieAfter 50;')} {vm('b')} }} }}"
    )
    record = await asyncio.wait_for(runner.run(), 5)
    assert not record.normal and record.description == "domain crashed"
    assert sorted(entry for entry in log if entry.startswith("terminate")) == [
        "terminate a",
        "terminate b",
    ]


async def test_deploy_failure_message_reaches_the_record() -> None:
    runner, log, _ = runner_for(
        f"sfConfig extends Compound {{ {vm('a')} {vm('b', 'failDeploy true;')} }}"
    )
    record = await asyncio.wait_for(runner.run(), 5)
    assert record.description == "cannot create disk: no space left"
    assert "terminate a" in log


async def test_timeout_uses_real_timers() -> None:
    runner, _, _ = runner_for(f"sfConfig extends Timeout {{ time 100; {vm('action')} }}")
    record = await asyncio.wait_for(runner.run(), 5)
    assert record.description == "timeout occurred"
