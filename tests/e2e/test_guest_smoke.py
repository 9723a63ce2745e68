"""Three real guests under qemu:///system (TCG), each on a qcow2 overlay of the base image,
report on their serial consoles the identity their kernel command line gave them; then they
are removed and nothing is left. The foundation the descriptor-driven e2e tests build on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from e2e_guests import (
    GuestRun,
    GuestSpec,
    console_identity,
    console_lines,
    list_test_domains,
    virsh,
    wait_for_marker,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

SPECS = [
    GuestSpec("machine9-dom1", "10.0.0.5", "255.255.0.0", "10.0.0.1"),
    GuestSpec("machine9-dom2", "10.0.0.6", "255.255.0.0", "10.0.0.1"),
    GuestSpec("machine10-dom1", "10.0.1.7", "255.255.255.0", "10.0.1.1"),
]


def test_three_guests_show_their_identity_and_leave_nothing(guest_run: GuestRun) -> None:
    start = time.monotonic()
    names = [guest_run.define_and_start(spec) for spec in SPECS]
    for name, spec in zip(names, SPECS, strict=True):
        wait_for_marker(guest_run.console(name))
        print(f"{name}: console up {time.monotonic() - start:.1f}s after the first start",
              file=sys.stderr)  # fmt: skip
        text = guest_run.console(name).read_text(errors="replace")
        assert console_identity(text) == {
            "hostname": spec.hostname,
            "ip": spec.ip,
            "netmask": spec.netmask,
            "gateway": spec.gateway,
        }
        lines = console_lines(text)
        assert any(ln.startswith("net dev=eth0 ") and ln.endswith(" configured") for ln in lines)
        # The guest reads the base image's label through its overlay.
        assert "disk name=vda bytes=67108864 base=SDMESH-BASE-IMAGE-v1" in lines
        assert virsh("domstate", name).stdout.strip() == "running"

        overlay = guest_run.dir / f"{name}.qcow2"
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", str(overlay)],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        assert info["format"] == "qcow2"
        assert info["backing-filename"] == str(guest_run.image.base)

    # ACPI power button (virsh shutdown): the guest powers itself off.
    virsh("shutdown", names[-1])
    deadline = time.monotonic() + 60
    while virsh("domstate", names[-1]).stdout.strip() != "shut off":
        assert time.monotonic() < deadline, "guest ignored virsh shutdown"
        time.sleep(0.2)
    assert "poweroff reason=acpi" in console_lines(guest_run.console(names[-1]).read_text())

    guest_run.cleanup()
    assert guest_run.leftovers() == []
    assert not [n for n in list_test_domains() if n.startswith(guest_run.prefix)]
    assert not guest_run.dir.exists()
