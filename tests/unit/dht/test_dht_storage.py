"""A node's record store: only accepted records, bounded, expiring, republished when due."""

from __future__ import annotations

import dataclasses

import pytest

from sdmesh.dht.ids import ID_SIZE, distance, location_of
from sdmesh.dht.records import Decision, DhtRecord, RecordAuthority
from sdmesh.dht.storage import RecordStore
from sdmesh.transport import Keyring

AUTHORITY = RecordAuthority(Keyring([b"\x01" * 32]))
OWN = b"\x00" * ID_SIZE
WRITER = b"w" * ID_SIZE


def record(
    key: bytes = b"pool/a", generation: int = 1, sequence: int = 0, value: bytes = b"v"
) -> DhtRecord:
    return AUTHORITY.authenticate(DhtRecord(key, value, generation, sequence, WRITER, 0))


def offer(store: RecordStore, rec: DhtRecord, now: float = 0.0) -> Decision:
    return store.offer(rec.location, rec, now)


def test_offer_then_get() -> None:
    store = RecordStore(OWN, AUTHORITY)
    assert offer(store, record()) is Decision.STORE
    assert store.get(location_of(b"pool/a"), 1.0) == record()
    assert len(store) == 1 and store.bytes_used == len(record().encode())


def test_stale_and_conflicting_offers_leave_the_newer_record() -> None:
    store = RecordStore(OWN, AUTHORITY)
    offer(store, record(generation=5))
    assert offer(store, record(generation=4, sequence=99)) is Decision.STALE
    assert offer(store, record(generation=5, value=b"other")) is Decision.CONFLICT
    assert store.get(location_of(b"pool/a"), 0.0) == record(generation=5)


def test_unauthenticated_offer_is_refused() -> None:
    store = RecordStore(OWN, AUTHORITY)
    forged = dataclasses.replace(record(generation=9), value=b"evil")
    assert offer(store, forged) is Decision.UNAUTHENTICATED
    assert len(store) == 0


def test_record_offered_under_the_wrong_location_is_refused() -> None:
    store = RecordStore(OWN, AUTHORITY)
    assert store.offer(location_of(b"pool/b"), record(b"pool/a"), 0.0) is Decision.INVALID


def test_records_expire_ttl_after_their_last_store() -> None:
    store = RecordStore(OWN, AUTHORITY, ttl=100.0)
    offer(store, record(), now=0.0)
    assert offer(store, record(), now=60.0) is Decision.DUPLICATE  # refreshes
    assert store.get(record().location, 159.0) is not None
    assert store.get(record().location, 160.0) is None
    assert len(store) == 0 and store.bytes_used == 0


def test_expire_sweeps_everything_old() -> None:
    store = RecordStore(OWN, AUTHORITY, ttl=10.0)
    for n in range(5):
        offer(store, record(b"k%d" % n), now=float(n))
    assert store.expire(12.5) == 3
    assert len(store) == 2


def test_an_expired_record_does_not_block_an_older_version() -> None:
    store = RecordStore(OWN, AUTHORITY, ttl=10.0)
    offer(store, record(generation=5), now=0.0)
    assert offer(store, record(generation=1), now=20.0) is Decision.STORE


def keys_by_distance(count: int) -> list[bytes]:
    """Keys sorted nearest-to-OWN first."""
    keys = [b"key-%d" % n for n in range(count * 4)]
    return sorted(keys, key=lambda k: distance(OWN, location_of(k)))[:count]


def test_full_store_drops_the_farthest_record_for_a_nearer_one() -> None:
    near, mid, far = keys_by_distance(3)
    store = RecordStore(OWN, AUTHORITY, max_records=2)
    offer(store, record(mid))
    offer(store, record(far))
    assert offer(store, record(near)) is Decision.STORE
    assert location_of(far) not in store
    assert location_of(near) in store and location_of(mid) in store


def test_full_store_refuses_a_record_farther_than_all_it_holds() -> None:
    near, mid, far = keys_by_distance(3)
    store = RecordStore(OWN, AUTHORITY, max_records=2)
    offer(store, record(near))
    offer(store, record(mid))
    assert offer(store, record(far)) is Decision.NO_ROOM
    assert len(store) == 2


def test_byte_budget_is_enforced() -> None:
    near, mid, far = keys_by_distance(3)
    size = len(record(near, value=b"x" * 1000).encode())
    store = RecordStore(OWN, AUTHORITY, max_bytes=2 * size + 10)
    offer(store, record(far, value=b"x" * 1000))
    offer(store, record(mid, value=b"x" * 1000))
    assert offer(store, record(near, value=b"x" * 1000)) is Decision.STORE
    assert store.bytes_used <= store.max_bytes
    assert location_of(far) not in store


def test_newer_version_that_no_longer_fits_drops_the_old_one_too() -> None:
    near, far = keys_by_distance(2)
    small = len(record(far).encode())
    store = RecordStore(OWN, AUTHORITY, max_bytes=len(record(near).encode()) + small + 100)
    offer(store, record(near))
    offer(store, record(far))
    grown = record(far, generation=2, value=b"x" * 5000)
    assert offer(store, grown) is Decision.NO_ROOM
    assert location_of(far) not in store  # never keep serving the version it replaces
    assert location_of(near) in store


def test_due_for_republish_skips_recently_stored_records() -> None:
    store = RecordStore(OWN, AUTHORITY)
    offer(store, record(b"a"), now=0.0)
    offer(store, record(b"b"), now=0.0)
    offer(store, record(b"b"), now=50.0)  # someone else pushed it recently
    due = store.due_for_republish(now=60.0, interval=60.0)
    assert [rec.key for _, rec in due] == [b"a"]
    store.mark_republished(location_of(b"a"), 60.0)
    assert store.due_for_republish(now=100.0, interval=60.0) == []
    assert [rec.key for _, rec in store.due_for_republish(now=120.0, interval=60.0)] == [b"a", b"b"]


@pytest.mark.parametrize("kwargs", [{"max_records": 0}, {"max_bytes": 0}, {"ttl": 0.0}])
def test_bounds_must_be_positive(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RecordStore(OWN, AUTHORITY, **kwargs)  # type: ignore[arg-type]


def test_a_version_the_application_refuses_does_not_replace_the_record_held() -> None:
    """Anyone holding the cluster key authenticates any version: the admission check (a pool
    record's writer proof) keeps a forgery at a higher version from replacing the genuine."""
    store = RecordStore(OWN, AUTHORITY)
    store.admit = lambda rec: not rec.value.startswith(b"forged")
    assert offer(store, record(generation=1, value=b"genuine")) is Decision.STORE
    forged = record(generation=2**63 - 1, sequence=2**63 - 1, value=b"forged")
    assert offer(store, forged) is Decision.UNAUTHENTICATED
    assert store.get(location_of(b"pool/a"), 1.0) == record(generation=1, value=b"genuine")
    assert offer(store, record(generation=2, value=b"genuine")) is Decision.STORE
    assert offer(store, record(generation=2, value=b"genuine")) is Decision.DUPLICATE
