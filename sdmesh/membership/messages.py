"""Membership protocol messages and their wire form.

Each message turns into a plain list headed by a small integer tag (compact in msgpack, which
matters inside a 1400-byte datagram) and comes back through ``decode``, which accepts nothing
but the exact shape. The transport (``sdmesh.transport``) seals and frames these structures;
datagrams carry ``PacketMessage`` values, push-pull streams carry ``PushPull``.

Besides membership, the same channels carry *rumors*: small application records (pool
announcements, tombstones) that every member learns, last writer wins per ``(topic, key)``.

Encoding assumes msgpack's defaults (``use_bin_type=True`` to pack, ``raw=False`` to unpack), so
strings come back as ``str`` and bytes as ``bytes``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdmesh.membership.member import Address, Member, Meta, State
from sdmesh.membership.wire import (
    MAX_UINT32,
    MAX_UINT64,
    MalformedMessage,
    expect_address,
    expect_bool,
    expect_bytes,
    expect_int,
    expect_list,
    expect_meta,
    expect_name,
    expect_text,
)

MAX_COMPOUND_PARTS = 255
"""More parts than this cannot fit a datagram anyway; refuse them before looking inside."""
MAX_PUSH_PULL_MEMBERS = 65536
"""Far beyond any mesh we aim at; bounds the work a single stream can cause."""
MAX_PUSH_PULL_RUMORS = 65536
"""Likewise for rumors (a node keeps ``max_rumors``, 4096 by default)."""
MAX_PROOF_BYTES = 512
"""A signature and a host certificate take about 230 bytes (sdmesh/membership/identity.py)."""
MAX_TOPIC_BYTES = 32
MAX_RUMOR_KEY_BYTES = 128
MAX_RUMOR_PAYLOAD_BYTES = 640
"""Topic, key and payload limits (UTF-8 bytes for the strings): with an ASCII origin name and
the clock, a rumor stays under 1,100 bytes: it fits a 1,400-byte datagram next to a probe. 640:
the largest tombstone (a 255-character member name, an operator's termination signature for a
63-character pool by a 63-character operator) takes about 550."""


class Tag(enum.IntEnum):
    """First element of every wire list."""

    PING = 1
    PING_REQ = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    COMPOUND = 8
    PUSH_PULL = 9
    RUMOR = 10


_STATE_CODES: dict[State, int] = {State.ALIVE: 0, State.SUSPECT: 1, State.DEAD: 2, State.LEFT: 3}
_CODE_STATES: dict[int, State] = {code: state for state, code in _STATE_CODES.items()}


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; ``target`` names the intended member so a reused address does not ack."""

    seq: int
    target: str

    def to_wire(self) -> list[Any]:
        return [Tag.PING.value, self.seq, self.target]


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask a relay to probe ``target`` for us (SWIM's indirect probe).

    With ``nack`` set the relay answers ``Nack`` when the target stays silent, so the requester
    can tell a dead target from its own lossy link (Lifeguard, Dadgar et al. 2018, section 4.3).
    """

    seq: int
    target: str
    target_addr: Address
    nack: bool

    def to_wire(self) -> list[Any]:
        host, port = self.target_addr
        return [Tag.PING_REQ.value, self.seq, self.target, host, port, self.nack]


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ``Ping`` (or relayed answer to a ``PingReq``), matched by ``seq``."""

    seq: int

    def to_wire(self) -> list[Any]:
        return [Tag.ACK.value, self.seq]


@dataclass(frozen=True, slots=True)
class Nack:
    """A relay reached its deadline without hearing from the target."""

    seq: int

    def to_wire(self) -> list[Any]:
        return [Tag.NACK.value, self.seq]


@dataclass(frozen=True, slots=True)
class Alive:
    """A member is alive at ``incarnation``, reachable at ``addr``, with ``meta``."""

    name: str
    incarnation: int
    addr: Address
    meta: Meta
    proof: bytes = b""
    """The member's signature and certificate (sdmesh/membership/identity.py); left out of
    the wire form when empty, so a mesh without a CA keeps the older six-field form."""

    def to_wire(self) -> list[Any]:
        host, port = self.addr
        wire = [Tag.ALIVE.value, self.name, self.incarnation, host, port, self.meta]
        if self.proof:
            wire.append(self.proof)
        return wire


@dataclass(frozen=True, slots=True)
class Suspect:
    """``sender`` failed to reach ``name`` at ``incarnation``; distinct senders confirm."""

    name: str
    incarnation: int
    sender: str

    def to_wire(self) -> list[Any]:
        return [Tag.SUSPECT.value, self.name, self.incarnation, self.sender]


@dataclass(frozen=True, slots=True)
class Dead:
    """``name`` is dead at ``incarnation``; with ``left`` it departed: gracefully itself
    (``sender`` is ``name``), or forced out by an operator at ``sender`` (``ForceLeave``)."""

    name: str
    incarnation: int
    sender: str
    left: bool = False
    proof: bytes = b""
    """For a member's own leave: its signature and certificate (optional on the wire)."""

    def to_wire(self) -> list[Any]:
        wire = [Tag.DEAD.value, self.name, self.incarnation, self.sender, self.left]
        if self.proof:
            wire.append(self.proof)
        return wire


@dataclass(frozen=True, slots=True)
class Rumor:
    """An application record the whole mesh learns; the newest per ``(topic, key)`` wins.

    ``ltime`` is the origin's Lamport clock at publication, so a rumor published after
    another was seen orders after it whatever the hosts' clocks say. ``origin`` breaks ties
    between concurrent publishers, and the payload settles the one tie left (an origin that
    restarted and reused an ``ltime`` before relearning the clock), so every member picks the
    same winner.
    """

    topic: str
    key: str
    ltime: int
    origin: str
    payload: bytes

    @property
    def rank(self) -> tuple[int, str, bytes]:
        """Total order of rumors about one key: greater is newer."""
        return (self.ltime, self.origin, self.payload)

    def fields(self) -> list[Any]:
        return [self.topic, self.key, self.ltime, self.origin, self.payload]


def checked_rumor(
    topic: object, key: object, ltime: object, origin: object, payload: object
) -> Rumor:
    """A rumor whose fields are within the limits, or ``MalformedMessage`` (a ``ValueError``)."""
    return Rumor(
        expect_text(topic, "rumor topic", MAX_TOPIC_BYTES),
        expect_text(key, "rumor key", MAX_RUMOR_KEY_BYTES),
        expect_int(ltime, "rumor ltime", 1, MAX_UINT64),
        expect_name(origin, "rumor origin"),
        expect_bytes(payload, "rumor payload", MAX_RUMOR_PAYLOAD_BYTES),
    )


@dataclass(frozen=True, slots=True)
class RumorUpdate:
    """A rumor in transit, with its ``age``: whole seconds since its origin published it, as
    far as the sender knows (rounded up).

    Carrying the age lets every member expire a rumor at about the same time after its
    publication. Were expiry counted from each member's own learning time, a member that
    learned late would hand an expired rumor back to those that already dropped it, and it
    would never die.
    """

    rumor: Rumor
    age: int

    def to_wire(self) -> list[Any]:
        return [Tag.RUMOR.value, *self.rumor.fields(), self.age]


GossipMessage = Alive | Suspect | Dead | RumorUpdate
"""Updates disseminated by piggybacking and gossip."""

SimpleMessage = Ping | PingReq | Ack | Nack | Alive | Suspect | Dead | RumorUpdate


@dataclass(frozen=True, slots=True)
class Compound:
    """Several messages in one datagram: a probe plus piggybacked gossip, usually."""

    messages: tuple[SimpleMessage, ...]

    def to_wire(self) -> list[Any]:
        return [Tag.COMPOUND.value, [message.to_wire() for message in self.messages]]


PacketMessage = SimpleMessage | Compound
"""Anything that travels in one datagram."""


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state exchange over a stream (anti-entropy and join).

    The initiator sends its state with ``reply`` false; the other side merges it and answers
    with its own state, ``reply`` true, echoing ``join``. ``rumors`` is the sender's rumor
    map, newest first; the field is left out of the wire form when empty, so a mesh that
    publishes nothing keeps the older five-field form.
    """

    sender: str
    join: bool
    reply: bool
    members: tuple[Member, ...]
    rumors: tuple[RumorUpdate, ...] = ()

    def to_wire(self) -> list[Any]:
        wire = [
            Tag.PUSH_PULL.value,
            self.sender,
            self.join,
            self.reply,
            [
                [m.name, m.incarnation, _STATE_CODES[m.state], m.addr[0], m.addr[1], m.meta]
                + ([m.proof] if m.proof else [])
                for m in self.members
            ],
        ]
        if self.rumors:
            wire.append([[*update.rumor.fields(), update.age] for update in self.rumors])
        return wire


Message = PacketMessage | PushPull


def decode(obj: object) -> Message:
    """Rebuild any membership message from its wire structure, or raise ``MalformedMessage``."""
    if not isinstance(obj, list | tuple) or not obj:
        raise MalformedMessage("message: expected a non-empty list")
    tag = expect_int(obj[0], "message tag", 0, 255)
    if tag == Tag.COMPOUND:
        return _decode_compound(obj)
    if tag == Tag.PUSH_PULL:
        return _decode_push_pull(obj)
    return _decode_simple(obj, tag)


def decode_packet(obj: object) -> PacketMessage:
    """Decode what a datagram may carry; push-pull state never travels by datagram."""
    message = decode(obj)
    if isinstance(message, PushPull):
        raise MalformedMessage("push-pull state is stream-only")
    return message


def decode_stream(obj: object) -> PushPull:
    """Decode what a push-pull stream may carry."""
    message = decode(obj)
    if not isinstance(message, PushPull):
        raise MalformedMessage("a stream carries push-pull state only")
    return message


def _decode_simple(obj: list[Any] | tuple[Any, ...], tag: int) -> SimpleMessage:
    if tag == Tag.PING:
        _, seq, target = expect_list(obj, 3, "ping")
        return Ping(expect_int(seq, "ping seq", 0, MAX_UINT32), expect_name(target, "ping target"))
    if tag == Tag.ACK:
        _, seq = expect_list(obj, 2, "ack")
        return Ack(expect_int(seq, "ack seq", 0, MAX_UINT32))
    if tag == Tag.NACK:
        _, seq = expect_list(obj, 2, "nack")
        return Nack(expect_int(seq, "nack seq", 0, MAX_UINT32))
    if tag == Tag.PING_REQ:
        _, seq, target, host, port, nack = expect_list(obj, 6, "ping-req")
        return PingReq(
            expect_int(seq, "ping-req seq", 0, MAX_UINT32),
            expect_name(target, "ping-req target"),
            expect_address(host, port, "ping-req target"),
            expect_bool(nack, "ping-req nack"),
        )
    if tag == Tag.ALIVE:
        _, name, incarnation, host, port, meta, proof = _with_proof(obj, 6, "alive")
        return Alive(
            expect_name(name),
            expect_int(incarnation, "incarnation"),
            expect_address(host, port),
            expect_meta(meta),
            expect_bytes(proof, "alive proof", MAX_PROOF_BYTES),
        )
    if tag == Tag.SUSPECT:
        _, name, incarnation, sender = expect_list(obj, 4, "suspect")
        return Suspect(
            expect_name(name), expect_int(incarnation, "incarnation"), expect_name(sender, "sender")
        )
    if tag == Tag.DEAD:
        _, name, incarnation, sender, left, proof = _with_proof(obj, 5, "dead")
        return Dead(
            expect_name(name),
            expect_int(incarnation, "incarnation"),
            expect_name(sender, "sender"),
            expect_bool(left, "dead left"),
            expect_bytes(proof, "dead proof", MAX_PROOF_BYTES),
        )
    if tag == Tag.RUMOR:
        return _decode_rumor(expect_list(obj, 7, "rumor")[1:], "rumor")
    raise MalformedMessage(f"unknown message tag {tag}")


def _with_proof(obj: object, length: int, what: str) -> Sequence[Any]:
    """``length`` fields and an optional trailing proof (``b""`` when absent)."""
    if isinstance(obj, list | tuple) and len(obj) == length:
        return [*obj, b""]
    return expect_list(obj, length + 1, what)


def _decode_compound(obj: list[Any] | tuple[Any, ...]) -> Compound:
    _, parts = expect_list(obj, 2, "compound")
    if not isinstance(parts, list | tuple):
        raise MalformedMessage("compound: parts must be a list")
    if not 1 <= len(parts) <= MAX_COMPOUND_PARTS:
        raise MalformedMessage(f"compound: {len(parts)} parts outside [1, {MAX_COMPOUND_PARTS}]")
    messages: list[SimpleMessage] = []
    for part in parts:
        if not isinstance(part, list | tuple) or not part:
            raise MalformedMessage("compound part: expected a non-empty list")
        tag = expect_int(part[0], "compound part tag", 0, 255)
        if tag in (Tag.COMPOUND, Tag.PUSH_PULL):
            raise MalformedMessage("compound parts cannot nest or carry push-pull state")
        messages.append(_decode_simple(part, tag))
    return Compound(tuple(messages))


def _decode_rumor(fields: Sequence[Any], what: str) -> RumorUpdate:
    topic, key, ltime, origin, payload, age = fields
    return RumorUpdate(
        checked_rumor(topic, key, ltime, origin, payload),
        expect_int(age, f"{what} age", 0, MAX_UINT32),
    )


def _decode_push_pull(obj: list[Any] | tuple[Any, ...]) -> PushPull:
    if isinstance(obj, list | tuple) and len(obj) == 5:
        obj = [*obj, []]
    _, sender, join, reply, entries, rumor_entries = expect_list(obj, 6, "push-pull")
    if not isinstance(entries, list | tuple):
        raise MalformedMessage("push-pull: members must be a list")
    if len(entries) > MAX_PUSH_PULL_MEMBERS:
        raise MalformedMessage(f"push-pull: {len(entries)} members is absurd")
    members: list[Member] = []
    for entry in entries:
        name, incarnation, code, host, port, meta, proof = _with_proof(entry, 6, "push-pull member")
        state = _CODE_STATES.get(expect_int(code, "member state", 0, 255))
        if state is None:
            raise MalformedMessage(f"push-pull: unknown member state {code}")
        members.append(
            Member(
                expect_name(name),
                expect_address(host, port),
                expect_int(incarnation, "incarnation"),
                state,
                expect_meta(meta),
                expect_bytes(proof, "push-pull member proof", MAX_PROOF_BYTES),
            )
        )
    if not isinstance(rumor_entries, list | tuple):
        raise MalformedMessage("push-pull: rumors must be a list")
    if len(rumor_entries) > MAX_PUSH_PULL_RUMORS:
        raise MalformedMessage(f"push-pull: {len(rumor_entries)} rumors is absurd")
    rumors = tuple(
        _decode_rumor(expect_list(entry, 6, "push-pull rumor"), "push-pull rumor")
        for entry in rumor_entries
    )
    return PushPull(
        expect_name(sender, "sender"),
        expect_bool(join, "push-pull join"),
        expect_bool(reply, "push-pull reply"),
        tuple(members),
        rumors,
    )
