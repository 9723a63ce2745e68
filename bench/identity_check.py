"""Per-message cost of host identity checks (figures only, never asserted).

What a member pays for one incoming alive claim, in microseconds:

* ``core, no CA``: the membership core handling an alive datagram as today;
* ``core, CA, news``: the same with identities, every claim a new incarnation (a signature
  and, the first time, a certificate to verify: the worst case);
* ``core, CA, repeat``: a claim heard again (gossip repeats each one several times; the core
  drops it before any check);
* ``checker, cached``: ``check_alive`` on a claim already verified (push-pull merges);
* ``checker, uncached``: ``check_alive`` verifying signature and known certificate;
* ``sign``: making our own proof (once per incarnation of ours);
* ``record seal`` / ``record check, cert known`` / ``record check, new cert``: a pool record
  signed by its writer, and its check by a reader (sdmesh/pools/record_seal.py): signature
  and entitlement, the writer's certificate already verified once or not (CA signature too).

Also the bytes a proof adds to an alive message. Run:
    .venv/bin/python bench/identity_check.py [--seconds S]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable

from sdmesh.membership import Alive, Member, Membership, MembershipConfig, Received, Start
from sdmesh.membership.identity import IdentityChecker
from sdmesh.membership.wire import packed_size
from sdmesh.trust.identity import sign_certificate
from sdmesh.trust.keys import OperatorKey

NOW = time.time()
CA = OperatorKey.generate("cluster-ca")
META = {"hypervisor": "kvm", "api": "http://10.0.0.2:7948", "capacity": {"vcpus": 64}}


def checker(name: str, serial: int) -> IdentityChecker:
    key = OperatorKey.generate(name)
    cert = sign_certificate(CA, name, key.public, serial, int(NOW) - 60, int(NOW) + 86400)
    return IdentityChecker(CA.public, key, cert, wall=lambda: NOW)


def per_call(work: Callable[[int], object], seconds: float) -> float:
    """Microseconds per call of ``work(i)``."""
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            work(count)
            count += 1
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    seconds = parser.parse_args().seconds
    b = checker("b", 2)
    addr = ("10.0.0.2", 7946)
    proofs = [b.prove_alive(i, addr, META) for i in range(1, 5001)]

    def core(identity: IdentityChecker | None) -> Membership:
        node = Membership(
            MembershipConfig(randomize_probe_phase=False),
            Member("a", ("10.0.0.1", 7946)),
            random.Random(1),
            identity,
        )
        node.handle(Start(), 0.0)
        return node

    def news(incarnation: int) -> Alive:
        return Alive("b", incarnation, addr, META, b.prove_alive(incarnation, addr, META))

    plain, checked, repeat = core(None), core(checker("a", 1)), core(checker("a", 1))
    src = ("10.0.0.2", 7946)
    repeat.handle(Received(src, Alive("b", 1, addr, META, proofs[0])), 1.0)
    rows = {
        "core, no CA": per_call(
            lambda i: plain.handle(Received(src, Alive("b", i + 1, addr, META)), 1.0), seconds
        ),
        "core, CA, news": per_call(
            lambda i: checked.handle(
                Received(
                    src, Alive("b", 5001 + i, addr, META, b.prove_alive(5001 + i, addr, META))
                ),
                1.0,
            ),
            seconds,
        )
        - per_call(lambda i: b.prove_alive(5001 + i, addr, META), seconds),
        "core, CA, repeat": per_call(
            lambda i: repeat.handle(Received(src, Alive("b", 1, addr, META, proofs[0])), 1.0),
            seconds,
        ),
    }
    cached = checker("a", 1)
    cached.check_alive("b", 1, addr, META, proofs[0])
    rows["checker, cached"] = per_call(
        lambda i: cached.check_alive("b", 1, addr, META, proofs[0]), seconds
    )
    fresh = checker("a", 1)
    fresh.check_alive("b", 1, addr, META, proofs[0])  # the certificate is known from here

    def uncached(i: int) -> bool:
        fresh.forget("b")  # so a lower incarnation is not a replay when the list wraps
        return fresh.check_alive("b", 2 + i % 4999, addr, META, proofs[1 + i % 4999])

    rows["checker, uncached"] = per_call(uncached, seconds)
    rows["sign (own claim)"] = per_call(lambda i: b.prove_alive(i, addr, META), seconds)
    rows.update(record_rows(b, seconds))
    print(f"python {platform.python_version()} on {platform.machine()}")
    for label, micro in rows.items():
        print(f"{label:22} {micro:8.1f} us/message")
    bare = packed_size(Alive("b", 10**9, addr, META).to_wire())
    signed = packed_size(Alive("b", 10**9, addr, META, proofs[0]).to_wire())
    print(f"alive message: {bare} B without proof, {signed} B with (+{signed - bare} B)")


def record_rows(writer: IdentityChecker, seconds: float) -> dict[str, float]:
    """What a pool record's proof costs its writer and a reader (per record)."""
    from sdmesh.pools import record_seal as seal
    from sdmesh.pools.records import PoolRecord

    names = [f"h{i}" for i in range(64)] + [writer.name]
    pool = next(
        p for p in (f"web{i}" for i in range(10_000)) if seal.ranked_entitled(p, "b", names)
    )
    record = PoolRecord(
        pool, "a" * 64, 7, "b", "running", {f"sfConfig:vm{i}": "h1" for i in range(8)}
    )
    sealed = seal.seal_record(record, "b", writer.prove)
    known = checker("a", 1)

    def new_cert(i: int) -> object:
        return seal.record_refusal(sealed, names, checker("a", 1).check_signed)

    fresh_cost = per_call(new_cert, seconds) - per_call(lambda i: checker("a", 1), seconds)
    return {
        "record seal": per_call(lambda i: seal.seal_record(record, "b", writer.prove), seconds),
        "record check, cert known": per_call(
            lambda i: seal.record_refusal(sealed, names, known.check_signed), seconds
        ),
        "record check, new cert": fresh_cost,
    }


if __name__ == "__main__":
    main()
