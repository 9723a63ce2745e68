"""Hosts deny by default (issue 11 item 4): every refusal, located and naming its setting,
with nothing created. Leaves run on libvirt's test driver; "a real host" is the same
connection with the capabilities of a QEMU host, so the checks that only real hosts make run
too (they refuse before any backend or libvirt call)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sdmesh.components.context import HostContext
from sdmesh.components.policy import HostPolicy, PolicyRefused, local_run_policy
from sdmesh.components.registry import component_factory
from sdmesh.hypervisor import LibvirtDriver
from sdmesh.hypervisor.simulated_host import write_simulated_host
from sdmesh.language import resolve_text
from sdmesh.lifecycle.model import Node, TerminationRecord
from sdmesh.pools.layout import skeleton, walk
from sdmesh.runner.app import Component, ComponentError

LIB = (
    '#include "ch/cern/openlab/smartdomains/components.sf"\n'
    '#include "org/smartfrog/services/shellscript/components.sf"\n'
)
HASH = "sha256:" + "ab" * 32


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[LibvirtDriver]:
    uri = write_simulated_host(tmp_path / "host.xml", cpus=4, memory_mib=4096)
    async with LibvirtDriver(uri) as opened:
        yield opened


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "volumes"


async def context_for(
    driver: LibvirtDriver, state: Path, policy: HostPolicy, *, real: bool
) -> HostContext:
    caps = await driver.capabilities()
    if real:  # a QEMU host: the allow-lists that guard host files apply
        caps = dataclasses.replace(caps, driver="qemu")
    return HostContext(driver, caps, state, "web", 1, HASH, "h1", policy=policy)


def leaf(text: str, path: str) -> tuple[Node, Node]:
    root = skeleton(resolve_text(LIB + text, "t.sf").root)
    nodes = {node.path: node for node in walk(root)}
    return nodes[path], root


def make(context: HostContext, text: str, path: str) -> Component:
    node, root = leaf(text, path)
    return component_factory(context)(node, root, {}, lambda record: None)


def created(state: Path) -> list[str]:
    top = state.parent
    if not top.exists():
        return []
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


# ----------------------------------------------------------------------- base images


@pytest.mark.parametrize(
    ("backend", "base"),
    [
        ("Qcow2OverlayBackend", "/etc/shadow"),
        ("LoopbackStorageBackend", "/etc/shadow"),
        ("Qcow2OverlayBackend", "/var/lib/sdmesh/images/../../../../etc/shadow"),
    ],
)
async def test_a_base_image_outside_the_allowed_dirs_is_refused_before_anything_exists(
    driver: LibvirtDriver, state: Path, backend: str, base: str
) -> None:
    context = await context_for(driver, state, HostPolicy(), real=True)
    disk = make(context, f'sfConfig extends {backend} {{ baseImage "{base}"; }}', "sfConfig")
    with pytest.raises(ComponentError) as refused:
        await disk.deploy()
    message = str(refused.value)
    assert message.startswith(f"baseImage {base}")
    assert "is outside allowed-image-dirs [/var/lib/sdmesh/images]" in (message)
    assert "(set allowed-image-dirs in /etc/sdmesh/sdmesh.toml)" in message
    assert created(state) == []


async def test_a_link_planted_in_an_allowed_dir_is_followed_before_the_check(
    driver: LibvirtDriver, state: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "base.qcow2").symlink_to("/etc/shadow")
    policy = HostPolicy(image_dirs=(images,))
    context = await context_for(driver, state, policy, real=True)
    disk = make(
        context,
        f'sfConfig extends Qcow2OverlayBackend {{ baseImage "{images}/base.qcow2"; }}',
        "sfConfig",
    )
    with pytest.raises(ComponentError, match=r"\(it resolves to /etc/shadow\) is outside"):
        await disk.deploy()
    assert created(state) == []


def test_prefixes_are_compared_by_path_components_not_strings(tmp_path: Path) -> None:
    images = tmp_path / "images"
    evil = tmp_path / "images-evil"
    for directory in (images, evil):
        directory.mkdir()
        (directory / "base.img").write_bytes(b"")
    policy = HostPolicy(image_dirs=(images,))
    assert policy.host_file("baseImage", f"{images}/base.img") == images / "base.img"
    with pytest.raises(PolicyRefused, match="outside allowed-image-dirs"):
        policy.host_file("baseImage", f"{evil}/base.img")
    with pytest.raises(PolicyRefused, match="must be an absolute path"):
        policy.host_file("baseImage", "images/base.img")


async def test_an_lvm_base_outside_the_allowed_volume_groups_is_refused(
    driver: LibvirtDriver, state: Path
) -> None:
    context = await context_for(driver, state, HostPolicy(), real=True)
    disk = make(
        context, 'sfConfig extends LVMStorageBackend { baseImage "/dev/vg0/root"; }', "sfConfig"
    )
    with pytest.raises(ComponentError) as refused:
        await disk.deploy()
    assert str(refused.value) == (
        "baseImage /dev/vg0/root is in volume group vg0, which is not in "
        "allowed-volume-groups [none] (set allowed-volume-groups in /etc/sdmesh/sdmesh.toml)"
    )
    allowed = HostPolicy(volume_groups=("vg0",))
    allowed.check_volume_group("baseImage vg0/root", "vg0")  # no refusal


# ----------------------------------------------------------------- kernels and NICs


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ('kernel "/root/vmlinuz";', "kernel /root/vmlinuz is outside allowed-image-dirs"),
        (
            'kernel "/var/lib/sdmesh/images/k"; initrd "/etc/shadow";',
            "initrd /etc/shadow is outside allowed-image-dirs",
        ),
        ('kernel "/var/lib/sdmesh/images/k"; bridge "br0";', "bridge br0 is not in"),
        ('kernel "/var/lib/sdmesh/images/k"; network "lan";', "network lan is not in"),
    ],
)
async def test_vm_host_names_outside_the_allow_lists_are_refused_at_deploy(
    driver: LibvirtDriver, state: Path, attrs: str, expected: str
) -> None:
    context = await context_for(driver, state, HostPolicy(), real=True)
    vm = make(context, f"sfConfig extends VM {{ {attrs} }}", "sfConfig")
    with pytest.raises(ComponentError, match=expected):
        await vm.deploy()
    assert created(state) == []
    assert await driver.list_managed() == []


def test_libvirts_default_network_is_allowed_and_bridges_are_opt_in() -> None:
    HostPolicy().check_network("default")
    with pytest.raises(PolicyRefused, match=r"allowed-bridges \[none\]"):
        HostPolicy().check_bridge("br0")
    HostPolicy(bridges=("br0",)).check_bridge("br0")


async def test_a_test_driver_host_takes_the_demos_names(driver: LibvirtDriver, state: Path) -> None:
    """It opens no base, kernel or bridge: the tutorial's /data/xen paths run there."""
    context = await context_for(driver, state, HostPolicy(), real=False)
    vm = make(context, 'sfConfig extends VM { kernel "/boot/vmlinuz-2.6-xen"; }', "sfConfig")
    await vm.deploy()


# ----------------------------------------------------------------------- console logs


@pytest.mark.parametrize(
    "log", ["/root/.ssh/authorized_keys", "../../root/.ssh/authorized_keys", "/tmp/x.log"]
)
@pytest.mark.parametrize("real", [False, True])
async def test_a_console_log_outside_the_state_dir_is_refused_and_nothing_is_created(
    driver: LibvirtDriver, state: Path, log: str, real: bool
) -> None:
    context = await context_for(driver, state, HostPolicy(), real=real)
    vm = make(
        context,
        f'sfConfig extends VM {{ kernel "/var/lib/sdmesh/images/k"; consoleLog "{log}"; }}',
        "sfConfig",
    )
    with pytest.raises(ComponentError, match="consoleLog"):
        await vm.deploy()
    assert created(state) == []
    assert await driver.list_managed() == []


async def test_a_console_log_name_lands_in_a_private_console_dir(
    driver: LibvirtDriver, state: Path
) -> None:
    context = await context_for(driver, state, HostPolicy(), real=False)
    vm = make(
        context, 'sfConfig extends VM { kernel "/boot/k"; consoleLog "web.log"; }', "sfConfig"
    )
    await vm.deploy()
    await vm.start()
    try:
        console = state.resolve() / "console"
        log = console / "web" / "web.log"  # under the pool's own directory
        assert vm.spec is not None and vm.spec.console_log == str(log)  # type: ignore[attr-defined]
        assert console.stat().st_mode & 0o777 == 0o700
        assert (console / "web").stat().st_mode & 0o777 == 0o700
    finally:
        await vm.terminate(TerminationRecord.normal_end("test"))
        await context.close()


async def test_a_pool_cannot_name_another_pools_console_log(
    driver: LibvirtDriver, state: Path
) -> None:
    """Console logs are kept per pool: web's descriptor cannot make QEMU append to db's log."""
    other = state.resolve() / "console" / "db" / "sdm-db-vm.log"
    for real in (False, True):
        context = await context_for(driver, state, HostPolicy(), real=real)
        vm = make(
            context,
            f'sfConfig extends VM {{ kernel "/var/lib/sdmesh/images/k"; consoleLog "{other}"; }}',
            "sfConfig",
        )
        with pytest.raises(ComponentError, match="is outside the console directory"):
            await vm.deploy()
        await context.close()
    assert created(state) == []


@pytest.mark.parametrize("what", ["baseImage", "kernel"])
def test_a_nul_byte_in_a_path_is_a_located_refusal(what: str) -> None:
    policy = HostPolicy(image_dirs=(Path("/var/lib/sdmesh/images"),))
    with pytest.raises(
        PolicyRefused, match=f"^{what} '/var/lib/sdmesh/images/a'... contains a NUL"
    ):
        if what == "baseImage":
            policy.base_image("/var/lib/sdmesh/images/a\0b")
        else:
            policy.host_file(what, "/var/lib/sdmesh/images/a\0b")
    with pytest.raises(PolicyRefused, match=r"^consoleLog .* contains a NUL byte"):
        HostPolicy.console_log(Path("/var/lib/sdmesh/volumes/console/web"), "/x\0.log")


def test_console_log_names_are_names() -> None:
    console = Path("/var/lib/sdmesh/volumes/console")
    for bad in (".hidden", "a\nb", "", "x" * 200):
        with pytest.raises(PolicyRefused, match="is not a file name"):
            HostPolicy.console_log(console, bad)


# ----------------------------------------------------------------------------- shell

SCRIPT = (
    "sfConfig extends Compound {{ sh extends BashShell; "
    'run extends Script {{ shell LAZY ATTRIB sh; deployScript "touch {marker}"; }} '
    'own extends Shell {{ exec extends DATA Exec {{ cmd [|"/bin/touch", "{marker}"|]; }} }} }}'
)


@pytest.mark.parametrize("path", ["sfConfig:run", "sfConfig:own"])
async def test_shell_components_are_refused_without_allow_shell(
    driver: LibvirtDriver, state: Path, tmp_path: Path, path: str
) -> None:
    marker = tmp_path / "ran"
    context = await context_for(driver, state, HostPolicy(), real=False)
    component = make(context, SCRIPT.format(marker=marker), path)
    with pytest.raises(ComponentError) as refused:
        await component.deploy()
    assert str(refused.value) == (
        f"{path} is a shell component and this host does not allow shell components "
        "(set allow-shell = true in /etc/sdmesh/sdmesh.toml)"
    )
    assert not marker.exists()


async def test_an_idle_interpreter_is_not_started_where_shell_is_not_allowed(
    driver: LibvirtDriver, state: Path, tmp_path: Path
) -> None:
    """The tutorial's ``myShell extends BashShell``: nothing talks to it, nothing runs."""
    context = await context_for(driver, state, HostPolicy(), real=False)
    shell = make(context, SCRIPT.format(marker=tmp_path / "ran"), "sfConfig:sh")
    await shell.deploy()
    assert getattr(shell, "process", None) is None


async def test_a_host_that_allows_shell_runs_the_script(
    driver: LibvirtDriver, state: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    context = await context_for(driver, state, HostPolicy(allow_shell=True), real=False)
    await make(context, SCRIPT.format(marker=marker), "sfConfig:run").deploy()
    assert marker.exists()


def test_sdmesh_run_allows_the_users_shell_and_confines_root_only(tmp_path: Path) -> None:
    as_user = local_run_policy(tmp_path, euid=1000)
    assert as_user.allow_shell
    assert as_user.host_file("baseImage", "/etc/hostname") == Path(
        os.path.realpath("/etc/hostname")
    )
    as_root = local_run_policy(tmp_path, euid=0)
    assert as_root.allow_shell
    with pytest.raises(PolicyRefused, match="sdmesh run as root keeps to the host defaults"):
        as_root.host_file("baseImage", "/etc/shadow")
    as_root.host_file("baseImage", str(tmp_path / "images" / "base.qcow2"))


@pytest.mark.parametrize("backend", ["Qcow2OverlayBackend", "LoopbackStorageBackend"])
async def test_a_base_with_a_backing_file_is_refused_before_anything_exists(
    driver: LibvirtDriver, state: Path, tmp_path: Path, backend: str
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    base = images / "base.qcow2"  # a qcow2 whose backing file is outside the allowed dir
    base.write_bytes(b"QFI\xfb" + (3).to_bytes(4, "big") + (512).to_bytes(8, "big") + bytes(100))
    context = await context_for(driver, state, HostPolicy(image_dirs=(images,)), real=True)
    disk = make(context, f'sfConfig extends {backend} {{ baseImage "{base}"; }}', "sfConfig")
    with pytest.raises(ComponentError, match="is a qcow2 image with a backing file"):
        await disk.deploy()
    assert created(state) == []
