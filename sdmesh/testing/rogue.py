"""A rogue for tests (issue 12): a process that holds the cluster key and nothing else.

It has no host certificate (or one it made itself, which no agent's CA signed), so everything
it says is what anyone who stole the key could say. It speaks the mesh's own protocols through
sdmesh's own code (the sealed transport, the membership messages, the DHT node, the pool
records): no crypto of its own, so a test of what it cannot do tests the real checks.

What it tries, each a coroutine run on the caller's event loop:

* ``rpc``: a sealed pool RPC to a member's stream port, naming any sender (``orders``,
  ``terminate``, ``submit``, ...): the frame authenticates, so only authorization stops it.
* ``inject_rumor``: a gossip rumor (``pool``, ``tomb`` topics) pushed in a push-pull, the way
  a member spreads one, at a Lamport time that beats what the mesh holds.
* ``join_as``: an alive claim for an existing member's name at the rogue's own address
  (unsigned, or signed with a self-made certificate).
* ``store_record``: a forged ``PoolRecord`` under ``pool/<name>`` in the DHT, the way a
  shepherd stores one (``b"\\x00"`` + record, versioned by generation); ``store_value``:
  anything under any key at any version (a forged descriptor under ``spec/<digest>``).

In network-namespace tests, run it inside the rogue host's namespace with ``run_in_netns``:
sockets keep the namespace of the thread that made them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from sdmesh.dht import Dht
from sdmesh.dht.ids import node_id_for
from sdmesh.membership import Member, PushPull, Rumor, RumorUpdate, State, decode_stream
from sdmesh.membership.identity import IdentityChecker
from sdmesh.pools.records import Order, PoolRecord
from sdmesh.transport import StreamClient, TransportSecurity
from sdmesh.trust.identity import sign_certificate
from sdmesh.trust.keys import OperatorKey

T = TypeVar("T")
Address = tuple[str, int]
Meta = dict[str, Any]

#: Seconds the rogue waits for an answer: an agent that drops a frame answers nothing.
TIMEOUT = 5.0
#: Where pool records live in the DHT (sdmesh.agent.pools.store), and the one-part prefix.
RECORD_KEY = "pool/{}"
SMALL_BLOB = b"\x00"


@dataclass
class Rogue:
    """A key holder with no identity; ``name`` is what it calls itself when not lying."""

    security: TransportSecurity
    name: str = "mallory"
    bind: str = "0.0.0.0"
    """The address its DHT node binds (the rogue host's own, in a namespace)."""
    refused: list[object] = field(default_factory=list)
    """Answers that were refusals or no answer at all, for assertion messages."""

    @classmethod
    def from_key_file(cls, path: str | Path, name: str = "mallory", bind: str = "0.0.0.0") -> Rogue:
        return cls(TransportSecurity.from_key_file(path), name, bind)

    # ------------------------------------------------------------------ pool RPCs
    async def rpc(
        self,
        address: Address,
        recipient: str,
        request: Mapping[str, object],
        *,
        sender: str | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        """Send ``request`` to member ``recipient`` at ``address`` (its gossip port), sealed
        as from ``sender`` (default: the rogue's own name). The answer, or None when the
        member answered nothing (a dropped frame)."""
        client = StreamClient(self.security, identity=sender or self.name)
        client.peers.introduce(address, recipient)
        try:
            return await client.request(address, dict(request), timeout=timeout)
        except (OSError, TimeoutError) as error:
            self.refused.append(f"{recipient}: no answer ({error})")
            return None
        except Exception as error:  # StreamError: the member closed without a word
            self.refused.append(f"{recipient}: {error}")
            return None

    async def terminate(
        self,
        address: Address,
        recipient: str,
        pool: str,
        generation: object,
        *,
        signature: bytes = b"",
        sender: str | None = None,
    ) -> Any:
        """A ``terminate`` RPC up to ``generation`` (any value: bounds are the agent's job)."""
        request: dict[str, object] = {"rpc": "terminate", "pool": pool, "generation": generation}
        if signature:
            request["signature"] = signature
        return await self.rpc(address, recipient, request, sender=sender)

    async def order(
        self,
        address: Address,
        recipient: str,
        order: Order,
        *,
        sender: str | None = None,
    ) -> Any:
        """An ``orders`` RPC carrying one leaf order (deploy, start or terminate)."""
        request = {"rpc": "orders", "orders": [order.to_wire()]}
        return await self.rpc(address, recipient, request, sender=sender)

    # ------------------------------------------------------------------ membership
    async def push_pull(
        self,
        address: Address,
        *,
        sender: str | None = None,
        members: Sequence[Member] = (),
        rumors: Sequence[Rumor] = (),
        join: bool = False,
    ) -> PushPull | None:
        """One push-pull with the member at ``address`` (unaddressed, as a joiner's): what
        the rogue claims goes in, the member's full state comes back (None: no answer)."""
        message = PushPull(
            sender or self.name,
            join,
            False,
            tuple(members),
            tuple(RumorUpdate(rumor, 0) for rumor in rumors),
        )
        client = StreamClient(self.security, identity=sender or self.name)
        try:
            reply = await client.request(address, message.to_wire(), timeout=TIMEOUT)
            return decode_stream(reply)
        except Exception as error:  # no answer, or not a push-pull
            self.refused.append(f"push-pull with {address}: {error}")
            return None

    async def rumor_clock(self, address: Address) -> int:
        """The highest Lamport time among the rumors the member at ``address`` holds."""
        state = await self.push_pull(address)
        return max((update.rumor.ltime for update in state.rumors), default=0) if state else 0

    async def inject_rumor(
        self,
        address: Address,
        topic: str,
        key: str,
        body: Mapping[str, object] | bytes,
        *,
        origin: str | None = None,
        ltime: int | None = None,
    ) -> int:
        """Push a rumor ``(topic, key)`` whose payload is ``body`` (msgpack'ed as the pool
        service does) into the member at ``address``, which spreads it as its own news.
        Its Lamport time beats everything the member holds unless ``ltime`` is given. The
        Lamport time used."""
        payload = body if isinstance(body, bytes) else msgpack.packb(dict(body), use_bin_type=True)
        if ltime is None:
            ltime = await self.rumor_clock(address) + 1
        rumor = Rumor(topic, key, ltime, origin or self.name, bytes(payload))
        await self.push_pull(address, rumors=[rumor])
        return ltime

    async def join_as(
        self,
        address: Address,
        name: str,
        claimed: Address,
        *,
        incarnation: int = 2**62,
        meta: Mapping[str, Any] | None = None,
        self_signed: bool = False,
    ) -> PushPull | None:
        """Claim to be member ``name``, alive at ``claimed`` (the rogue's address), in a
        join push-pull to the member at ``address``. The incarnation is far above anything
        ``name`` could refute; ``self_signed`` adds a proof under a certificate the rogue
        made itself (its own CA), else the claim is unsigned."""
        meta = dict(meta or {})
        proof = self.self_made_proof(name, incarnation, claimed, meta) if self_signed else b""
        member = Member(name, claimed, incarnation, State.ALIVE, meta, proof)
        return await self.push_pull(address, sender=name, members=[member], join=True)

    @staticmethod
    def self_made_proof(name: str, incarnation: int, addr: Address, meta: Meta) -> bytes:
        """A well-formed alive proof for ``name``, under a CA no agent trusts."""
        ca = OperatorKey.generate("rogue-ca")
        key = OperatorKey.generate(name)
        now = int(time.time())
        certificate = sign_certificate(ca, name, key.public, 1, now - 60, now + 3600)
        checker = IdentityChecker(ca.public, key, certificate)
        return checker.prove_alive(incarnation, addr, meta)

    # ------------------------------------------------------------------ DHT
    async def dht(self, seeds: Sequence[Address]) -> Dht:
        """A DHT node of the rogue's, joined through ``seeds`` (members' DHT ports)."""
        node = Dht(node_id=node_id_for(self.name))
        await node.start((self.bind, 0), self.security)
        try:
            if not await node.bootstrap(seeds):
                raise ConnectionError(f"no DHT node answered at {list(seeds)}")
        except BaseException:
            node.stop()
            raise
        return node

    async def read_record(self, seeds: Sequence[Address], pool: str) -> PoolRecord | None:
        """The pool's record as the DHT gives it (reading is what any key holder may do)."""
        node = await self.dht(seeds)
        try:
            found = await node.get(RECORD_KEY.format(pool))
        finally:
            node.stop()
        if found is None or found.value[:1] != SMALL_BLOB:
            return None
        return PoolRecord.decode(found.value[1:])

    async def store_record(
        self,
        seeds: Sequence[Address],
        record: PoolRecord | bytes,
        *,
        pool: str | None = None,
        dht_generation: int | None = None,
    ) -> int:
        """Store a forged record (or raw record bytes, for generations ``PoolRecord`` would
        not encode) under ``pool/<name>``, versioned like a shepherd's write (by default
        the record's generation). How many replicas took it."""
        if isinstance(record, PoolRecord):
            data, pool = record.encode(), record.pool
            generation = record.generation if dht_generation is None else dht_generation
        else:
            if pool is None or dht_generation is None:
                raise ValueError("raw record bytes need pool and dht_generation")
            data, generation = record, dht_generation
        return await self.store_value(seeds, RECORD_KEY.format(pool), SMALL_BLOB + data, generation)

    async def store_value(
        self,
        seeds: Sequence[Address],
        key: str,
        value: bytes,
        generation: int,
        *,
        sequence: int | None = None,
    ) -> int:
        """Store any value under any key at any version (``spec/<digest>``: a descriptor).
        How many nodes took it, the rogue's own DHT node included."""
        node = await self.dht(seeds)
        try:
            return await node.put(key, value, generation, sequence=sequence)
        finally:
            node.stop()


def run_in_netns(netns: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work()`` on an event loop of its own in a thread inside ``netns`` (the rogue's
    host): every socket it opens lives there, whatever namespace the caller is in."""
    from sdmesh.testing.netns import in_netns

    return in_netns(netns, lambda: asyncio.run(work()))


__all__ = ["Rogue", "run_in_netns"]
