"""DHT RPC messages as plain objects for the sealed codec, and their strict validation.

``rpcudp`` frames a call as ``0x00 | 20-byte id | umsgpack([name, args])`` and decodes whatever
arrives. Here a call is the object ``[0, id, method, args]`` and a reply
``[1, id, responder node id, result]``,
sealed and decoded by the transport codec (which already refuses anything that is not plain
msgpack); this module then checks every field before a handler sees it.

Methods and their arguments (``sender`` is the caller's node id)::

    ping       [sender]                    -> node id
    store      [sender, location, record]  -> decision name ("store", "stale", ...)
    find_node  [sender, target]            -> [[id, ip, port], ...]
    find_value [sender, location]          -> {"nodes": [...], "record": bytes | nil}
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from typing import Any, Final

from sdmesh.dht.ids import ID_SIZE, is_node_id
from sdmesh.dht.lookup import Contact
from sdmesh.dht.records import MAX_RECORD_SIZE, Decision

REQUEST: Final = 0
RESPONSE: Final = 1
MSG_ID_SIZE: Final = 20
MAX_CONTACTS: Final = 64
"""More contacts than any sane k; a longer list is a malformed answer."""

PING: Final = "ping"
STORE: Final = "store"
FIND_NODE: Final = "find_node"
FIND_VALUE: Final = "find_value"
METHODS: Final = frozenset({PING, STORE, FIND_NODE, FIND_VALUE})

_ARITY: Final = {PING: 1, STORE: 3, FIND_NODE: 2, FIND_VALUE: 2}


class MalformedRpc(ValueError):
    """An authenticated message that is not a valid DHT call or reply."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    msg_id: bytes
    method: str
    sender: bytes
    args: tuple[bytes, ...]
    """Arguments after the sender id, all byte strings (checked per method)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    msg_id: bytes
    responder: bytes
    result: Any
    """Validated by the caller, who knows which method it answers."""


@dataclasses.dataclass(frozen=True, slots=True)
class ValueAnswer:
    contacts: list[Contact]
    record: bytes | None


def request(msg_id: bytes, method: str, sender: bytes, *args: bytes) -> list[Any]:
    return [REQUEST, msg_id, method, [sender, *args]]


def response(msg_id: bytes, responder: bytes, result: Any) -> list[Any]:
    return [RESPONSE, msg_id, responder, result]


def parse(message: Any) -> Request | Response:
    """Classify and check an opened datagram; raises :class:`MalformedRpc`."""
    if not isinstance(message, list) or len(message) != 4:
        raise MalformedRpc("not an RPC array")
    kind, msg_id, third, fourth = message
    if not isinstance(msg_id, bytes) or len(msg_id) != MSG_ID_SIZE:
        raise MalformedRpc("bad message id")
    if type(kind) is not int or kind not in (REQUEST, RESPONSE):
        raise MalformedRpc("unknown message kind")
    if kind == RESPONSE:
        if not is_node_id(third):
            raise MalformedRpc("reply without the responder's node id")
        return Response(msg_id, third, fourth)
    method, args = third, fourth
    if (
        not isinstance(method, str)
        or method not in METHODS
        or not isinstance(args, list)
        or len(args) != _ARITY[method]
    ):
        raise MalformedRpc(f"bad call {method!r}")
    if not all(isinstance(arg, bytes) for arg in args) or not is_node_id(args[0]):
        raise MalformedRpc("arguments must be byte strings after a node id")
    if method in (FIND_NODE, FIND_VALUE, STORE) and not is_node_id(args[1]):
        raise MalformedRpc("target must be a node id")
    if method == STORE and len(args[2]) > MAX_RECORD_SIZE:
        raise MalformedRpc("record too large")
    return Request(msg_id, method, args[0], tuple(args[1:]))


def encode_contacts(contacts: list[Contact]) -> list[list[Any]]:
    return [[c.id, c.ip, c.port] for c in contacts]


def parse_contacts(result: Any) -> list[Contact]:
    if not isinstance(result, list) or len(result) > MAX_CONTACTS:
        raise MalformedRpc("contacts must be a short list")
    return [_parse_contact(item) for item in result]


def parse_node_id(result: Any) -> bytes:
    if not is_node_id(result):
        raise MalformedRpc(f"expected a {ID_SIZE}-byte node id")
    assert isinstance(result, bytes)
    return result


def parse_decision(result: Any) -> Decision:
    try:
        return Decision(result)
    except ValueError:
        raise MalformedRpc(f"unknown store decision {result!r}") from None


def parse_value_answer(result: Any) -> ValueAnswer:
    if not isinstance(result, dict) or set(result) != {"nodes", "record"}:
        raise MalformedRpc("find_value answer must be {nodes, record}")
    record = result["record"]
    if record is not None and not isinstance(record, bytes):
        raise MalformedRpc("record must be bytes or nil")
    return ValueAnswer(parse_contacts(result["nodes"]), record)


def value_answer(contacts: list[Contact], record: bytes | None) -> dict[str, Any]:
    return {"nodes": encode_contacts(contacts), "record": record}


def _parse_contact(item: Any) -> Contact:
    if not isinstance(item, list) or len(item) != 3:
        raise MalformedRpc("contact must be [id, ip, port]")
    node_id, ip, port = item
    if not is_node_id(node_id):
        raise MalformedRpc("contact id must be a node id")
    if not isinstance(ip, str) or len(ip) > 64:
        raise MalformedRpc("contact ip must be a string")
    if not _is_ip(ip):
        raise MalformedRpc(f"contact ip {ip!r} is not an IP address")
    if type(port) is not int or not 0 < port < 65536:
        raise MalformedRpc(f"contact port {port!r} out of range")
    return Contact(node_id, ip, port)


@functools.lru_cache(maxsize=4096)
def _is_ip(text: str) -> bool:
    """Cached: every answer lists up to k contacts, nearly always the same few hundred."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
