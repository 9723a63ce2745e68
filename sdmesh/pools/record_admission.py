"""Which pool records and descriptors a host keeps and reads in the DHT (issue 12).

The DHT authenticates records with the cluster key only, and replaces a record with any
higher version: anyone holding the key could store a forged pool record at the largest
version, and every replica would drop the genuine one for it. Checking the writer's proof
when the record is *read* then leaves nothing usable, and the pool can never be taken over.
So the same check runs where records are *kept*: ``pool_admission(taken)`` is the
``Dht.set_admission`` predicate that admits a ``pool/<name>`` record only when ``taken``
(the pool service's check of its writer) accepts it, and a descriptor under
``spec/<digest>`` only when it is the descriptor of that digest (a forged one at a higher
version would leave a pool's successor without its descriptor); other keys pass unchanged.

Limit: a value too big for one DHT value is stored as a head naming its chunks; a head
cannot be checked on its own and is admitted (the reader still checks what it joins).
"""

from __future__ import annotations

from collections.abc import Callable

from sdmesh.dht.records import DhtRecord
from sdmesh.dht.storage import Admission
from sdmesh.pools.records import PoolRecord, PoolSpec, RecordFormatError

#: Where pool records and descriptors live (sdmesh.agent.pools.store), and the prefix of a
#: one-part value.
RECORD_PREFIX = b"pool/"
SPEC_PREFIX = b"spec/"
ONE_PART = b"\x00"


def pool_admission(taken: Callable[[PoolRecord], bool] | None) -> Admission:
    """The DHT admission for pools: ``taken(record)`` decides for pool records (None: every
    well-formed one, as without host identities), a descriptor must match its digest; a
    malformed one is refused, chunks and other keys pass."""

    def admit(record: DhtRecord) -> bool:
        key = record.key
        if b"#" in key or record.value[:1] != ONE_PART:
            return True  # a chunk, or a chunked value's head: see the module's docstring
        try:
            if key.startswith(RECORD_PREFIX):
                pool_record = PoolRecord.decode(record.value[1:])
                return taken is None or taken(pool_record)
            if key.startswith(SPEC_PREFIX):
                spec = PoolSpec.decode(record.value[1:])
                return key == SPEC_PREFIX + spec.digest.encode()
        except RecordFormatError:
            return False
        return True

    return admit


__all__ = ["pool_admission"]
