"""The network-namespace harness itself: addresses, reachability, faults, processes, teardown."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdmesh.testing import netns
from sdmesh.testing.netns import (
    Testbed,
    list_namespaces,
    process_dead,
    reap_stale,
)
from sdmesh.testing.pytest_netns import TestbedFactory

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.root


# --- on namespace hosts ----------------------------------------------------------------------------


def test_hosts_get_their_addresses_and_loopback(testbed: Testbed) -> None:
    for host in testbed:
        shown = testbed.exec(host, ["ip", "-4", "-o", "addr", "show"]).stdout
        assert f"inet {host.address}/16" in shown and "eth0" in shown
        assert "inet 127.0.0.1/8" in shown
        # Nothing but lo and eth0: the host cannot reach anything outside the testbed.
        links = testbed.exec(host, ["ip", "-o", "link", "show"]).stdout.splitlines()
        assert [line.split(":")[1].strip().split("@")[0] for line in links] == ["lo", "eth0"]
        assert "default" not in testbed.exec(host, ["ip", "route"]).stdout
    assert len({h.address for h in testbed}) == len(testbed)


def test_hosts_ping_each_other(testbed: Testbed) -> None:
    for src in testbed:
        for dst in testbed:
            if src != dst:
                assert testbed.ping(src, dst), f"{src} cannot ping {dst}"


def test_cut_isolates_a_host_and_heal_restores_it(testbed: Testbed) -> None:
    h0, h1, h2 = testbed
    testbed.cut(h1)
    assert not testbed.ping(h0, h1, timeout=0.3)
    assert not testbed.ping(h1, h2, timeout=0.3)
    assert testbed.udp_delivery(h1, h0, 20) == 0
    assert testbed.ping(h0, h2), "a cut must only isolate the cut host"
    testbed.cut(h1)  # idempotent
    testbed.heal(h1)
    assert testbed.ping(h0, h1) and testbed.ping(h1, h2)
    assert testbed.udp_delivery(h1, h0, 50) == 50
    testbed.heal(h1)  # healing a healed host changes nothing
    testbed.heal()
    assert testbed.ping(h0, h1)


def test_loss_100_drops_everything_and_0_restores(testbed: Testbed) -> None:
    h0, h1, _ = testbed
    testbed.loss(h0, 100)
    assert testbed.udp_delivery(h0, h1, 100) == 0
    assert not testbed.ping(h1, h0, timeout=0.3), "the echo reply from h0 is lost too"
    assert testbed.udp_delivery(h1, h0, 100) == 100, "'out' only drops what h0 sends"
    testbed.loss(h0, 100, "in")
    assert testbed.udp_delivery(h1, h0, 50) == 0
    testbed.loss(h0, 0)
    assert testbed.udp_delivery(h0, h1, 100) == 100
    assert testbed.udp_delivery(h1, h0, 100) == 100


def test_partial_loss_drops_about_that_share(testbed: Testbed) -> None:
    h0, h1, _ = testbed
    testbed.loss(h0, 30)
    got = testbed.udp_delivery(h0, h1, 2000)
    assert 1200 < got < 1600, f"30 % loss delivered {got} of 2000"  # ~10 sigma either side


def test_partition_splits_groups_but_not_within(testbed_factory: TestbedFactory) -> None:
    tb = testbed_factory(4)
    h0, h1, h2, h3 = tb
    tb.partition([h0, h1], [h2])
    assert tb.ping(h0, h1) and tb.ping(h2, h3) and tb.ping(h3, h0)
    assert not tb.ping(h0, h2, timeout=0.3) and not tb.ping(h2, h1, timeout=0.3)
    tb.heal_partitions()
    assert tb.ping(h0, h2) and tb.ping(h2, h1)
    tb.partition([h0], [h1])
    tb.cut(h3)
    tb.clear_faults()
    assert tb.ping(h0, h1) and tb.ping(h0, h3)


def test_processes_run_inside_their_host_with_logs(testbed: Testbed) -> None:
    h0, h1, _ = testbed
    server = testbed.run(
        h1,
        [
            sys.executable,
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
            f"s.bind(('{h1.address}', 5000)); print('listening', flush=True);"
            "d, a = s.recvfrom(100); print('got', d.decode(), 'from', a[0], flush=True)",
        ],
        label="echo",
    )
    deadline = time.monotonic() + 5
    while "listening" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    with testbed.socket(h0) as sock:
        sock.sendto(b"hello", (h1.address, 5000))
    assert server.popen.wait(5) == 0
    assert f"got hello from {h0.address}" in server.log()
    assert server.log_path.name == "h1.echo.log"


def test_kill_9_kills_the_program_itself(testbed: Testbed) -> None:
    h0 = testbed[0]
    proc = testbed.run(h0, ["sleep", "300"])
    assert proc.alive() and proc.cpu_seconds() >= 0 and proc.rss_bytes() > 0
    testbed.kill(proc)
    assert proc.returncode == -signal.SIGKILL
    testbed.kill(proc)  # idempotent
    other = testbed.run(h0, ["sleep", "300"])
    testbed.kill(h0)
    assert other.returncode == -signal.SIGKILL


def test_sniffed_frames_replay_unchanged(testbed: Testbed) -> None:
    h0, h1, _ = testbed
    with testbed.socket(h1) as receiver, testbed.socket(h0) as sender:
        receiver.bind((h1.address, 6000))
        receiver.settimeout(2)
        sender.bind((h0.address, 6001))
        sender.sendto(b"warm-up: ARP", (h1.address, 6000))
        assert receiver.recv(100) == b"warm-up: ARP"
        sniffed: list[netns.Frame] = []
        with _background(lambda: sniffed.extend(testbed.sniff(h1, udp_port=6000, count=1))):
            time.sleep(0.2)
            sender.sendto(b"original", (h1.address, 6000))
        assert receiver.recvfrom(100) == (b"original", (h0.address, 6001))
        (frame,) = sniffed
        assert frame.src == (h0.address, 6001) and frame.payload == b"original"
        testbed.inject(h0, frame)
        assert receiver.recvfrom(100) == (b"original", (h0.address, 6001))
        testbed.forge_udp(h2 := testbed[2], (h0.address, 7777), h1, 6000, b"forged")
        assert receiver.recvfrom(100) == (b"forged", (h0.address, 7777)), f"sent via {h2}"


def test_teardown_leaves_nothing(testbed_factory: TestbedFactory) -> None:
    before_links = _root_links()
    tb = Testbed(3)
    with tb:
        sleeper = tb.run(tb[0], ["sleep", "300"])
        orphan = subprocess.run(  # a process the testbed did not start, inside a host
            ["ip", "netns", "exec", tb[1].netns, "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        )
        orphan_pid = int(orphan.stdout)
        tb.loss(tb[2], 50)
        assert len(list_namespaces(tb.run_id + "-")) == 4
    assert tb.leftovers() == []
    assert list_namespaces(tb.run_id + "-") == []
    assert sleeper.returncode == -signal.SIGKILL
    assert process_dead(orphan_pid), "killed (its parent, init, reaps it when it will)"
    assert _root_links() == before_links, "the root namespace must never get an interface"
    tb.close()  # idempotent
    assert not tb.workdir.exists(), "a testbed's own log directory goes with it"


def test_stale_namespaces_of_a_dead_run_are_reaped(netns_ready: None) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"sdm-{dead.pid}-0-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    inside = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"])
    try:
        time.sleep(0.1)
        assert name in reap_stale()
        assert name not in list_namespaces()
        assert inside.wait(5) == -signal.SIGKILL
    finally:
        inside.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_cleanup_script_removes_only_dead_runs(netns_ready: None) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    # pid 1 is always alive: its "run" stands for one in progress (never --all without
    # --pid here: that would stop testbeds of other test runs on this machine).
    stale, live = f"sdm-{dead.pid}-0-br", "sdm-1-999-0"
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        script = str(ROOT / "scripts" / "netns-cleanup")
        out = subprocess.run(
            [script, "--pid", str(dead.pid)], capture_output=True, text=True, check=True
        ).stdout
        assert "removed 1 namespace" in out
        assert stale not in list_namespaces() and live in list_namespaces()
        subprocess.run([script, "--pid", "1"], capture_output=True, check=True)
        assert live in list_namespaces(), "a live run is left alone without --all"
        subprocess.run([script, "--all", "--pid", "1"], capture_output=True, check=True)
        assert live not in list_namespaces()
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_sixty_hosts_all_reach_each_other(testbed_factory: TestbedFactory) -> None:
    # 60 hosts need 3540 neighbour entries: more than the kernel's shared ARP table holds
    # (gc_thresh3 = 1024), so without static neighbours datagrams would silently vanish.
    start = time.monotonic()
    tb = testbed_factory(60)
    assert time.monotonic() - start < 10
    assert tb[59].address == "10.77.0.60" and tb[59].mac == "02:77:00:00:00:3b"
    socks = [tb.socket(h) for h in tb]
    try:
        for sock, host in zip(socks, tb, strict=True):
            sock.bind((host.address, 9000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for sock, host in zip(socks, tb, strict=True):
            for other in tb:
                if other != host:
                    sock.sendto(host.name.encode(), (other.address, 9000))
        for sock, host in zip(socks, tb, strict=True):
            sock.settimeout(2)
            heard = {sock.recv(16).decode() for _ in range(59)}
            assert heard == {h.name for h in tb} - {host.name}
    finally:
        for sock in socks:
            sock.close()


# --- helpers -------------------------------------------------------------------------------------


def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


class _background:
    """Run a function in a thread for the duration of a with block (it must end by itself)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.thread = threading.Thread(target=fn, daemon=True)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)


def test_socket_lives_in_its_host(testbed: Testbed) -> None:
    h0 = testbed[0]
    with testbed.socket(h0) as sock:
        sock.bind((h0.address, 0))  # only possible inside h0
    with pytest.raises(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((h0.address, 0))  # the test process itself is not in h0
