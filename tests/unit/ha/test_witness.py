"""The witness: gossiped as such, never picked by placement or as a shepherd, started
without a hypervisor, and counted in the majority like any member."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdmesh.agent.agent import Agent
from sdmesh.agent.config import AgentConfig, ConfigError, load_config
from sdmesh.agent.meta import witness_meta
from sdmesh.pools.ownership import (
    Owners,
    has_quorum,
    is_witness,
    shepherd,
    shepherd_candidates,
)
from sdmesh.pools.placement import Demand, HostOffer, place
from sdmesh.testing.api import free_port
from sdmesh.transport import load_security


def test_placement_never_picks_a_witness_even_when_pinned_or_listed() -> None:
    offers = [
        HostOffer("w", 64, 65536, 65536, witness=True),
        HostOffer("h1", 4, 4096, 4096),
    ]
    plan = place([Demand(f"vm{i}", 1, 512) for i in range(3)], offers)
    assert set(plan.assignments.values()) == {"h1"}
    pinned = place([Demand("vm", 1, 512, pinned="w")], offers)
    assert pinned.assignments == {} and "not a live member" in pinned.unplaced[0].reason
    listed = place([Demand("vm", 1, 512, hosts=("w",))], offers)
    assert listed.assignments == {}


def test_a_witness_never_shepherds_but_counts_in_the_majority() -> None:
    members = [("w", witness_meta((), "")), ("h1", {"capacity": {}}), ("h2", {})]
    assert is_witness(members[0][1]) and not is_witness(members[1][1])
    assert not is_witness({"witness": "yes"})  # only the flag itself
    candidates = shepherd_candidates(members)
    assert candidates == {"h1", "h2"}
    for pool in (f"pool-{i}" for i in range(200)):
        assert shepherd(pool, candidates) != "w"
        assert Owners(candidates).shepherd(pool) != "w"
    # Two hosts and a witness: one host and the witness are a majority of three.
    assert has_quorum(alive=2, counted=3)
    assert not has_quorum(alive=1, counted=3)


def test_witness_meta_offers_no_capacity() -> None:
    meta = witness_meta(("rack-b",), "http://127.0.0.1:7948")
    assert meta["witness"] is True and meta["capacity"] == {} and meta["hypervisor"] == "none"


def test_ha_settings_parse_and_refuse_bad_values(tmp_path: Path) -> None:
    env = {"SDMESH_WITNESS": "yes", "SDMESH_ISOLATION_TIMEOUT": "8", "SDMESH_LEASES": "1"}
    config = load_config(None, {}, env)
    assert config.witness is True and config.isolation_timeout == 8.0 and config.leases
    assert AgentConfig().witness is False and AgentConfig().isolation_timeout == 6.0
    path = tmp_path / "agent.toml"
    path.write_text(
        'witness = true\nleases = true\nwatchdog-device = "/dev/watchdog"\nfence-guard-socket = ""\n'
    )
    config = load_config(path, {}, {})
    assert config.witness and config.leases and config.watchdog_device == "/dev/watchdog"
    assert config.fence_guard_socket is None
    for env, message in (
        ({"SDMESH_ISOLATION_TIMEOUT": "1"}, "outside 3-600"),
        ({"SDMESH_ISOLATION_TIMEOUT": "soon"}, "not a number"),
        ({"SDMESH_WATCHDOG_DEVICE": "watchdog"}, "absolute path"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, {}, env)


@pytest.mark.parametrize("witness", [True, False])
async def test_a_witness_agent_starts_without_a_hypervisor(tmp_path: Path, witness: bool) -> None:
    config = AgentConfig(
        name="me",
        bind=("127.0.0.1", free_port(pair=True)),
        api=("127.0.0.1", 0),
        state_dir=tmp_path,
        witness=witness,
        insecure=True,
    )
    agent = Agent(config, load_security(None, insecure=True))
    task = asyncio.create_task(agent.run())
    try:
        for _ in range(400):
            if agent.status == "running" or task.done():
                break
            await asyncio.sleep(0.05)
        assert agent.status == "running", task.exception() if task.done() else agent.status
        assert agent.node is not None
        me = agent.node.core.member("me")
        assert me is not None and is_witness(me.meta) is witness
        if witness:
            assert agent.hypervisor is None and agent.pools is None and agent.dht is None
        else:  # a host: everything a witness skips
            assert agent.hypervisor is not None and agent.pools is not None
    finally:
        agent.request_leave()
        await asyncio.wait_for(task, 20)
    assert agent.status == "stopped"


async def _running(agent: Agent, task: asyncio.Task[None]) -> None:
    for _ in range(400):
        if agent.status == "running" or task.done():
            break
        await asyncio.sleep(0.05)
    assert agent.status == "running", task.exception() if task.done() else agent.status


async def test_a_host_and_a_witness_hold_leases_over_the_mesh(tmp_path: Path) -> None:
    security = load_security(None, insecure=True)

    def config(name: str, **extra: object) -> AgentConfig:
        (tmp_path / name).mkdir()
        return AgentConfig(
            name=name,
            bind=("127.0.0.1", free_port(pair=True)),
            api=("127.0.0.1", 0),
            state_dir=tmp_path / name,
            insecure=True,
            leases=True,
            fence_guard_socket=None,
            **extra,  # type: ignore[arg-type]
        )

    witness = Agent(config("w", witness=True), security)
    tasks = [asyncio.create_task(witness.run())]
    try:
        await _running(witness, tasks[0])
        assert witness.node is not None
        host = Agent(config("h", peers=(witness.node.udp.local_address,)), security)
        tasks.append(asyncio.create_task(host.run()))
        await _running(host, tasks[1])
        assert host.lease is not None and witness.lease is not None
        for _ in range(100):
            if host.lease.core.voters == {"h", "w"} and host.lease.may_run():
                break
            await asyncio.sleep(0.05)
        assert host.lease.core.voters == {"h", "w"} and host.lease.may_run()
        assert witness.lease.may_run()  # the witness holds one too (it runs nothing)
    finally:
        for agent in (witness, *([host] if len(tasks) > 1 else [])):
            agent.request_leave()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
