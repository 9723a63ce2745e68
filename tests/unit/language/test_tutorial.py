"""The SmartDomains tutorial descriptors resolve exactly as SmartFrog would resolve them."""

from __future__ import annotations

import json
from pathlib import Path

from sdmesh.language import resolve_file

EXAMPLES = Path(__file__).resolve().parents[3] / "descriptors" / "examples"

COMPOUND = "org.smartfrog.sfcore.compound.CompoundImpl"
SHELL = {
    "sfClass": "org.smartfrog.services.shellscript.SFScriptExecutionImpl",
    "exec": {"cmd": ["/bin/bash"], "echoCmd": "echo", "lineSeparator": "\n", "echoErrorCmd": "$?"},
}


def domain(name: str, ip: str, host: str, backend: str) -> dict[str, object]:
    # Order: VirtualMachine's attributes, then DefaultXenDomain's, then the domain's own.
    return {
        "sfClass": "sdmesh.components.VirtualMachine",
        "memory": 128,
        "vcpus": 1,
        "flavour": "xen",
        "restart": "never",
        "shell": {"$lazy": "ATTRIB myShell"},
        "kernel": "/boot/vmlinuz-2.6-xen",
        "gateway": "999.999.1.1",
        "netmask": "255.255.0.0",
        "domainName": name,
        "ip": ip,
        "hostname": host,
        "storageBackend": {"$lazy": f"ATTRIB {backend}"},
    }


LOOP = {
    "baseFormat": "raw",
    "sfClass": "sdmesh.storage.LoopbackStorageBackend",
    "shell": {"$lazy": "ATTRIB myShell"},
    "domainName": "domainLoopback",
    "baseImage": "/data/xen/slc3-smartfrog.img",
}
LVM = {
    "baseFormat": "raw",
    "sfClass": "sdmesh.storage.LVMStorageBackend",
    "snapshotSize": "1G",
    "shell": {"$lazy": "ATTRIB myShell"},
    "domainName": "domainLVM",
    "baseImage": "/data/xen/slc3-smartfrog.img",
}


def same(actual: object, expected: object) -> bool:
    """Equal including attribute order."""
    return json.dumps(actual) == json.dumps(expected)


def test_compound_version() -> None:
    result = resolve_file(EXAMPLES / "localVirtualPool.sf")
    expected = {
        "sfClass": COMPOUND,
        "sfSyncTerminate": True,
        "myShell": SHELL,
        "loop": LOOP,
        "domain1": domain("domainLoopback", "999.999.999.999", "machine9-dom1", "loop"),
        "lvm": LVM,
        "domain2": domain("domainLVM", "999.999.999.998", "machine9-dom2", "lvm"),
    }
    assert same(result.to_json(), expected)
    assert result.warnings == []
    children = [name for name, _ in result.root.children()]
    assert children == ["myShell", "loop", "domain1", "lvm", "domain2"]


def test_parallel_asynch_version_as_published() -> None:
    result = resolve_file(EXAMPLES / "asyncVirtualPool.sf")
    expected = {
        "sfClass": COMPOUND,
        "sfSyncTerminate": True,
        "myShell": SHELL,
        "pool": {
            "sfClass": "org.smartfrog.sfcore.workflow.combinators.Parallel",
            "sfSyncTerminate": False,
            "asynchCreateChild": True,
            "terminateOnEmptyDeploy": False,
            "terminateOnAbnormalChildTermination": True,
            "terminateOnAbnormalChildDeploy": True,
            "sfShouldTerminate": True,
            "smartDomain1": {
                "sfClass": COMPOUND,
                "sfSyncTerminate": True,
                "loop": LOOP,
                "domain1": domain("domainLoopback", "999.999.999.999", "machine9-dom1", "loop"),
            },
            "smartDomain2": {
                "sfClass": COMPOUND,
                "sfSyncTerminate": True,
                "lvm": LVM,
                "domain2": domain("domainLVM", "999.999.999.998", "machine9-dom2", "lvm"),
            },
        },
    }
    assert same(result.to_json(), expected)
    assert result.warnings == []


def test_scheduler_slide_with_typeset_dashes(tmp_path: Path) -> None:
    text = (EXAMPLES / "scheduledPool.sf").read_text().replace("-- extends VM", "- extends VM")
    (tmp_path / "slide.sf").write_text(text)
    result = resolve_file(tmp_path / "slide.sf")
    tree = result.to_json()
    assert isinstance(tree, dict)
    assert tree["simpleScheduler"]["hosts"] == ["host1", "host2", "host3"]
    dispatch = tree["VMs2Dispatch"]
    assert dispatch["scheduler"] == {"$lazy": "ATTRIB simpleScheduler"}
    vms = [v for k, v in dispatch.items() if k.startswith("unique")]
    assert [vm["hostname"] for vm in vms] == ["worker1", "worker2", "worker3"]
    assert len(result.warnings) == 3


def test_digest_is_stable_and_sensitive() -> None:
    one = resolve_file(EXAMPLES / "localVirtualPool.sf")
    two = resolve_file(EXAMPLES / "localVirtualPool.sf")
    other = resolve_file(EXAMPLES / "asyncVirtualPool.sf")
    assert one.digest() == two.digest() != other.digest()
