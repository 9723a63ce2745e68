"""The DHT admission for pool records: the pool service's writer check decides for one-part
``pool/<name>`` records, a malformed one is refused, other keys pass."""

from __future__ import annotations

from sdmesh.dht.ids import ID_SIZE
from sdmesh.dht.records import DhtRecord
from sdmesh.pools.record_admission import pool_admission
from sdmesh.pools.records import PoolRecord, PoolSpec

GENUINE = PoolRecord("demo", "a" * 64, 3, "h0", "running", {"sfConfig/pool/sd0": "h1"})


def dht_record(key: bytes, value: bytes) -> DhtRecord:
    return DhtRecord(key, value, 3, 0, b"w" * ID_SIZE, 0)


def test_the_writer_check_decides_for_pool_records() -> None:
    seen: list[PoolRecord] = []

    def taken(record: PoolRecord) -> bool:
        seen.append(record)
        return record.shepherd == "h0"

    admit = pool_admission(taken)
    forged = PoolRecord("demo", "a" * 64, 4, "mallory", "terminated")
    assert admit(dht_record(b"pool/demo", b"\x00" + GENUINE.encode()))
    assert not admit(dht_record(b"pool/demo", b"\x00" + forged.encode()))
    assert seen == [GENUINE, forged]
    assert not admit(dht_record(b"pool/demo", b"\x00not a record"))
    # Chunks and chunked heads are not checked here; other keys pass.
    assert admit(dht_record(b"pool/demo#0", b"part"))
    assert admit(dht_record(b"wire-test", b"\x00anything"))
    assert admit(dht_record(b"pool/demo", b"\x01head"))
    assert len(seen) == 2


def test_a_descriptor_is_kept_only_under_its_own_digest() -> None:
    import hashlib

    text = "sfConfig extends Compound {}"
    spec = PoolSpec("demo", text, hashlib.sha256(text.encode()).hexdigest())
    other = PoolSpec("demo", text + " ", hashlib.sha256((text + " ").encode()).hexdigest())
    admit = pool_admission(None)
    key = b"spec/" + spec.digest.encode()
    assert admit(dht_record(key, b"\x00" + spec.encode()))
    assert not admit(dht_record(key, b"\x00" + other.encode()))  # another descriptor
    assert not admit(dht_record(key, b"\x00garbage"))
    # Without a writer check, every well-formed pool record is kept.
    assert admit(dht_record(b"pool/demo", b"\x00" + GENUINE.encode()))
    assert not admit(dht_record(b"pool/demo", b"\x00garbage"))
