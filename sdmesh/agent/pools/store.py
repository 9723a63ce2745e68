"""Pool storage: records and specs in the DHT (chunked blobs), with a private local
file as fallback; records that no replica took are retried in the background."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from pathlib import Path

from sdmesh.agent.pools.common import PoolError
from sdmesh.agent.pools.state import PoolState
from sdmesh.pools.record_seal import is_foreign_submission
from sdmesh.pools.records import (
    CHUNK_BYTES,
    PoolRecord,
    PoolSpec,
    RecordFormatError,
    blob_head,
    join_blob,
    read_blob_head,
    retry_delay,
    split_blob,
)
from sdmesh.safeio import read_private, write_private
from sdmesh.transport import StreamError

log = logging.getLogger(__name__)

#: How long a host waits for a member to send a descriptor it missed in the DHT.
SPEC_FETCH_TIMEOUT = 5.0
#: What a descriptor digest looks like (sha256, hex): it names files here.
_DIGEST = re.compile(r"[0-9a-f]{64}")


class PoolStore(PoolState):
    """Records and specs: DHT first, the local file as this agent's own last copy."""

    async def _local_record(self, pool: str) -> PoolRecord | None:
        """Our own last record of the pool (the fallback file), read off the loop."""
        data = await asyncio.to_thread(read_private, self.state_dir / "specs" / f"{pool}.record")
        if data is not None:
            with contextlib.suppress(RecordFormatError):
                return PoolRecord.decode(data)
        return None

    async def _write_file(self, path: Path, data: bytes) -> None:
        """Write ``path`` in a worker thread, after the writes asked before (atomically: a
        reader never sees half a record)."""
        async with self._file_writes:
            await asyncio.to_thread(write_private, path, data)

    async def write_blob(self, key: str, data: bytes, generation: int) -> None:
        """Raises ``NotStored`` when some part reached no replica (``put`` returned 0: nobody
        answered, or every replica holds a newer version): the write did not happen."""
        if len(data) <= CHUNK_BYTES:
            _stored(key, await self.dht.put(key, b"\x00" + data, generation))
            return
        chunks = split_blob(data)
        counts = await asyncio.gather(
            *(self.dht.put(f"{key}#{i}", chunk, generation) for i, chunk in enumerate(chunks))
        )
        for i, count in enumerate(counts):
            _stored(f"{key}#{i}", count)
        _stored(key, await self.dht.put(key, b"\x01" + blob_head(chunks), generation))

    async def read_blob(self, key: str, quorum: int | None = 1) -> bytes | None:
        """``quorum=None`` hears from every replica: the newest version, not the first."""
        found = await self.dht.get(key, quorum=quorum)
        if found is None:
            found = self.dht.local_record(key)
        if found is None or not found.value:
            return None
        if found.value[:1] == b"\x00":
            return found.value[1:]
        count, sha = read_blob_head(found.value[1:])
        parts = await asyncio.gather(*(self.dht.get(f"{key}#{i}", quorum=1) for i in range(count)))
        if any(part is None for part in parts):
            return None
        return join_blob([part.value for part in parts if part is not None], sha)

    async def write_record(self, record: PoolRecord) -> bool:
        """Store the record in the DHT and the local fallback file; one that is not stored
        is retried in the background (backoff) until it is, or a newer one replaces it: a
        pool that stays running saves nothing more, and a takeover must not start from an
        older record. Whether it was stored now."""
        if await self._store_record(record):
            if self._unsaved.get(record.pool) is record:
                del self._unsaved[record.pool]
            return True
        pending = self._unsaved.get(record.pool)
        if pending is None or pending.generation <= record.generation:
            self._unsaved[record.pool] = record
        if self._saver is None or self._saver.done():
            self._saver = self._spawn(self._save_unsaved())
        return False

    async def _store_record(self, record: PoolRecord) -> bool:
        data = self.sealed_record(record).encode()  # with identities: named and proven
        stored = True
        try:
            await self._write_file(self.state_dir / "specs" / f"{record.pool}.record", data)
        except OSError as error:
            log.warning("pool %s: could not write its record file: %s", record.pool, error)
            stored = False
        try:
            await self.write_blob(f"pool/{record.pool}", data, record.generation)
        except Exception as error:
            log.warning("pool %s: could not store its record in the DHT: %s", record.pool, error)
            stored = False
        return stored

    async def _save_unsaved(self) -> None:
        attempt = 0
        while self._unsaved:
            await asyncio.sleep(retry_delay(attempt))
            attempt += 1
            for pool, record in list(self._unsaved.items()):
                stored = await self._store_record(record)
                if not stored:
                    answered, newest = await self.lookup_record(pool)
                    stored = (
                        answered
                        and newest is not None
                        and newest.generation > record.generation
                        and not is_foreign_submission(newest)  # a replayed envelope is none
                    )  # a successor saved a newer one: ours is moot
                if stored and self._unsaved.get(pool) is record:
                    del self._unsaved[pool]

    async def lookup_record(self, pool: str) -> tuple[bool, PoolRecord | None]:
        """The pool's newest record from every replica, and whether the DHT answered at all:
        (True, None) is a definite "not found", which ``read_record`` cannot tell from a
        failed lookup. A DHT with no contact answers nothing (this node alone is the whole
        DHT only when no other member is alive)."""
        try:
            data = await self.read_blob(f"pool/{pool}", None)
        except Exception as error:
            log.debug("pool %s: record lookup failed: %s", pool, error)
            return False, None
        if data is None and not self.dht.contacts() and len(self.live_members()) > 1:
            return False, None
        try:
            record = PoolRecord.decode(data) if data is not None else None
        except RecordFormatError as error:
            log.warning("pool %s: its record in the DHT is malformed: %s", pool, error)
            return False, None
        if record is not None and not self.record_taken(record):
            return False, None  # as a malformed one: nothing usable (refusal counted)
        return True, record

    async def read_record(self, pool: str, *, newest: bool = False) -> PoolRecord | None:
        """The pool's record: the DHT's or our own last one, the higher generation. With
        ``newest`` every replica is heard (a takeover must not start from a stale copy). With
        host identities a DHT record is used only when its writer proved it and may write it
        (``record_taken``); our own file is ours."""
        data: bytes | None = None
        with contextlib.suppress(Exception):
            data = await self.read_blob(f"pool/{pool}", None if newest else 1)
        records = []
        if data is not None:
            with contextlib.suppress(RecordFormatError):
                record = PoolRecord.decode(data)
                if self.record_taken(record):  # identities on: its writer's, and entitled
                    records.append(record)
        local = await self._local_record(pool)
        if local is not None:
            records.append(local)
        return max(records, key=lambda r: r.generation, default=None)

    async def store_spec(self, spec: PoolSpec) -> None:
        data = spec.encode()
        self._specs[spec.digest] = spec
        await self._write_file(self.state_dir / "specs" / f"{spec.digest}.spec", data)
        for attempt in range(4):  # a pool whose spec is not stored cannot be taken over
            try:
                await self.write_blob(f"spec/{spec.digest}", data, 1)
                return
            except NotStored as error:
                log.warning("pool %s: its descriptor is not stored yet: %s", spec.pool, error)
                await asyncio.sleep(retry_delay(attempt, first=0.5))
        raise PoolError(f"pool {spec.pool}: the DHT did not store its descriptor", 503)

    async def spec(self, digest: str, pool: str | None = None, ask: str = "") -> PoolSpec:
        """The spec stored under ``digest``, named ``pool`` when given: pools submitted from
        the same descriptor share one digest, and the stored spec names whichever came first.
        ``ask``: a member that has it (the pool's shepherd, named in its orders), asked
        directly when the DHT lookup misses. A miss is PoolError 503 (try again later)."""
        spec = await self._spec(digest, ask)
        return spec if pool is None or spec.pool == pool else dataclasses.replace(spec, pool=pool)

    async def _spec(self, digest: str, ask: str = "") -> PoolSpec:
        if not _DIGEST.fullmatch(digest):
            raise PoolError("not a descriptor digest")
        cached = self._specs.get(digest)
        if cached is not None:
            return cached
        path = self.state_dir / "specs" / f"{digest}.spec"
        data = await asyncio.to_thread(read_private, path)
        from_file = data is not None
        if data is None:
            try:
                data = await self.read_blob(f"spec/{digest}")
            except Exception as error:  # the DHT raises transport and decoding errors
                log.info("descriptor %s: DHT lookup failed: %s", digest[:12], error)
        if data is None and ask and ask != self.name:
            data = await self._spec_from(ask, digest)
        if data is None:
            where = f"in the DHT nor at {ask}" if ask and ask != self.name else "in the DHT"
            raise PoolError(f"descriptor {digest[:12]} not found {where}", 503)
        try:
            spec = PoolSpec.decode(data)
        except RecordFormatError as error:
            raise PoolError(f"descriptor {digest[:12]} is malformed: {error}") from None
        if spec.digest != digest:
            raise PoolError(f"descriptor {digest[:12]} does not match its digest")
        self._specs[digest] = spec
        if not from_file:
            with contextlib.suppress(OSError):  # a cache: the DHT still has it
                await self._write_file(path, data)
        return spec

    async def _spec_from(self, member: str, digest: str) -> bytes | None:
        """Ask ``member`` for a descriptor the DHT did not give us (checked by the caller)."""
        addr = self._address(member)
        if addr is None:
            return None
        try:
            reply = await self.client.request(
                addr, {"rpc": "spec", "digest": digest}, timeout=SPEC_FETCH_TIMEOUT
            )
        except (StreamError, OSError, TimeoutError) as error:
            log.info("descriptor %s: %s did not send it: %s", digest[:12], member, error)
            return None
        data = reply.get("spec") if isinstance(reply, dict) else None
        return data if isinstance(data, bytes) else None

    async def held_spec(self, digest: str) -> bytes | None:
        """A descriptor this agent holds (in memory or its own file), for a peer that missed
        it in the DHT. No DHT lookup: the peer has just done that."""
        if not _DIGEST.fullmatch(digest):
            return None
        cached = self._specs.get(digest)
        if cached is not None:
            return cached.encode()
        return await asyncio.to_thread(read_private, self.state_dir / "specs" / f"{digest}.spec")


class NotStored(Exception):
    """A DHT write that no replica took."""


def _stored(key: str, count: int) -> None:
    if count < 1:
        raise NotStored(f"no replica stored {key} (unreachable, or a newer version is there)")
