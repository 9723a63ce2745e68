"""Which pool records a host keeps and reads in the DHT (issue 12).

The DHT authenticates records with the cluster key only, and replaces a record with any
higher version: anyone holding the key could store a forged pool record at the largest
version, and every replica would drop the genuine one for it. Checking the writer's proof
when the record is *read* then leaves nothing usable, and the pool can never be taken over.
So the same check runs where records are *kept*: ``pool_record_admission(taken)`` is the
``Dht.set_admission`` predicate that admits a ``pool/<name>`` record only when ``taken``
(the pool service's check of its writer) accepts it; everything else passes unchanged.

Limit: a record too big for one DHT value is stored as a head naming its chunks; a head
cannot be checked on its own and is admitted (the reader still checks the joined record).
"""

from __future__ import annotations

from collections.abc import Callable

from sdmesh.dht.records import DhtRecord
from sdmesh.dht.storage import Admission
from sdmesh.pools.records import PoolRecord, RecordFormatError

#: Where pool records live (sdmesh.agent.pools.store), and the prefix of a one-part value.
RECORD_PREFIX = b"pool/"
ONE_PART = b"\x00"


def pool_record_admission(taken: Callable[[PoolRecord], bool]) -> Admission:
    """The DHT admission for pool records: ``taken(record)`` decides, a malformed one is
    refused, keys that are not pool records (specs, chunks) pass."""

    def admit(record: DhtRecord) -> bool:
        key = record.key
        if not key.startswith(RECORD_PREFIX) or b"#" in key:
            return True
        if record.value[:1] != ONE_PART:
            return True  # a chunked record's head: see the module's docstring
        try:
            return taken(PoolRecord.decode(record.value[1:]))
        except RecordFormatError:
            return False

    return admit


__all__ = ["pool_record_admission"]
