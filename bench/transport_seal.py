"""Seal+open throughput and latency of transport frames (figures only, never asserted).

Run: .venv/bin/python bench/transport_seal.py [--seconds S] [--baseline CHECKOUT]

``--baseline /work/main`` runs this same script against another checkout's ``sdmesh`` first
(before/after in one run: same machine, same load). The "junk" table is what a datagram costs
the receiver when it is refused at each step, against opening a genuine one (issue 12: junk
must cost about what a rejected key id costs).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sdmesh.transport.keyring import Keyring
from sdmesh.transport.seal import Channel, FrameCodec, InsecureCodec, SealedCodec

NOW = time.time()
DGRAM = Channel.DATAGRAM

PAYLOADS: dict[str, object] = {
    "ping (~40 B)": {"type": "ping", "seq": 123456, "from": "host-017", "target": "host-042"},
    "gossip (~500 B)": {
        "type": "gossip",
        "updates": [
            {"node": f"host-{n:03}", "state": "alive", "incarnation": n, "addr": "10.0.0.1:7946"}
            for n in range(8)
        ],
    },
    "full datagram (~1300 B)": {"type": "blob", "data": os.urandom(1280)},
}


def pair(sealed: bool, max_frame: int = 1400) -> tuple[FrameCodec, FrameCodec]:
    if not sealed:
        return InsecureCodec(max_frame=max_frame), InsecureCodec(max_frame=max_frame)
    ring = Keyring.generate()
    ring.install(os.urandom(32))  # a ring mid-rotation: two keys
    make = lambda: SealedCodec(ring, max_frame=max_frame, replay_window=128)  # noqa: E731
    return make(), make()


def throughput(payload: object, sealed: bool, seconds: float) -> tuple[float, int]:
    sender, receiver = pair(sealed)
    frame_size = len(sender.seal(payload, channel=DGRAM, now=NOW))
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(200):
            receiver.open(sender.seal(payload, channel=DGRAM, now=NOW), channel=DGRAM, now=NOW)
        count += 200
    return count / (time.perf_counter() - start), frame_size


def latency(payload: object, sealed: bool, samples: int = 20_000) -> tuple[list[int], list[int]]:
    sender, receiver = pair(sealed)
    seal_ns, open_ns = [], []
    clock = time.perf_counter_ns
    for _ in range(samples):
        t0 = clock()
        frame = sender.seal(payload, channel=DGRAM, now=NOW)
        t1 = clock()
        receiver.open(frame, channel=DGRAM, now=NOW)
        t2 = clock()
        seal_ns.append(t1 - t0)
        open_ns.append(t2 - t1)
    return seal_ns, open_ns


def pct(values: list[int], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] / 1000


def big_frame(size: int) -> tuple[float, float]:
    sender, receiver = pair(True, max_frame=size + 4096)
    payload = {"state": os.urandom(size)}
    t0 = time.perf_counter()
    frame = sender.seal(payload, channel=Channel.STREAM_REQUEST, now=NOW)
    t1 = time.perf_counter()
    receiver.open(frame, channel=Channel.STREAM_REQUEST, now=NOW)
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def refused_cost(frames: list[bytes], receiver: FrameCodec) -> float:
    """Median µs per ``open`` over distinct frames, each refused (or opened) once."""
    clock = time.perf_counter_ns
    costs = []
    for frame in frames:
        t0 = clock()
        with contextlib.suppress(Exception):  # Dropped, whatever this checkout calls it
            receiver.open(frame, channel=DGRAM, now=NOW)
        costs.append(clock() - t0)
    return statistics.median(costs) / 1000


def junk_table(count: int = 20_000) -> None:
    sender, receiver = pair(True)
    payload = PAYLOADS["gossip (~500 B)"]
    genuine = [sender.seal(payload, channel=DGRAM, now=NOW) for _ in range(count)]
    size = len(genuine[0])
    head = genuine[0][:5]  # version and key id of a genuine frame (sniffed)
    rows = {
        "random bytes (bad version)": [b"\xee" + os.urandom(size - 1) for _ in range(count)],
        "right version, unknown key id": [head[:1] + os.urandom(size - 1) for _ in range(count)],
        "real key id, forged body (new session)": [
            head + os.urandom(size - 5) for _ in range(count)
        ],
        "replay of a genuine frame": genuine[:count],
        "genuine frame (opened)": None,
    }
    fresh = pair(True)
    for frame in genuine:  # the receiver has seen them all: the replay row refuses each
        receiver.open(frame, channel=DGRAM, now=NOW)
    print(f"\n{'junk datagram (~' + str(size) + ' B), refused at':<42} {'µs p50':>7}")
    for name, frames in rows.items():
        if frames is None:
            other_sender, other_receiver = fresh
            frames = [other_sender.seal(payload, channel=DGRAM, now=NOW) for _ in range(count)]
            cost = refused_cost(frames, other_receiver)
        else:
            cost = refused_cost(frames, receiver)
        print(f"{name:<42} {cost:>7.2f}")
    if "recipient" in inspect.signature(sender.seal).parameters:
        from sdmesh.transport.seal import identity_tag

        bob = SealedCodec(sender.keyring, max_frame=1400, identity="b")  # type: ignore[attr-defined]
        to_c = [
            sender.seal(payload, channel=DGRAM, now=NOW, recipient=identity_tag("c"))  # type: ignore[call-arg]
            for _ in range(count)
        ]
        misdirected = refused_cost(to_c, bob)
        print(f"{'authentic, for another member (misdirected)':<42} {misdirected:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="per throughput figure")
    parser.add_argument("--baseline", type=Path, help="also run against this checkout, first")
    args = parser.parse_args()
    if args.baseline is not None:
        print(f"## baseline: {args.baseline}", flush=True)
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        subprocess.run(
            [sys.executable, __file__, "--seconds", str(args.seconds)], env=env, check=True
        )
        print(f"\n## this checkout: {Path(__file__).resolve().parents[1]}", flush=True)
    print(f"# python {platform.python_version()} on {platform.machine()}, one core")
    print(
        f"{'payload':<24} {'mode':<9} {'frame B':>7} {'seal+open/s':>12} "
        f"{'seal p50/p99 µs':>16} {'open p50/p99 µs':>16}"
    )
    for name, payload in PAYLOADS.items():
        for sealed in (True, False):
            rate, size = throughput(payload, sealed, args.seconds)
            seal_ns, open_ns = latency(payload, sealed)
            print(
                f"{name:<24} {'sealed' if sealed else 'insecure':<9} {size:>7} {rate:>12,.0f} "
                f"{pct(seal_ns, 50):>7.1f}/{pct(seal_ns, 99):<8.1f} "
                f"{pct(open_ns, 50):>7.1f}/{pct(open_ns, 99):<8.1f}"
            )
    for size in (1 << 20, (16 << 20) - 8192):
        seal_ms, open_ms = big_frame(size)
        print(
            f"stream frame {size / (1 << 20):.0f} MiB: seal {seal_ms:.1f} ms, open {open_ms:.1f} ms"
        )
    junk_table()


if __name__ == "__main__":
    main()
