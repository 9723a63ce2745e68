"""Authenticated transport: sealed msgpack over UDP datagrams and TCP streams.

Layers above (membership, DHT) use only what is exported here::

    security = load_security(key_file, insecure=insecure, cluster=name)  # join's policy
    udp = await UdpEndpoint.bind(("0.0.0.0", 7946), security)
    await udp.send(("10.0.0.5", 7946), {"type": "ping", "seq": 1})
    async for addr, message in udp:  # only frames that authenticated, were fresh, decoded
        ...
    server = await StreamServer.start(("0.0.0.0", 7946), security, handler)
    state = await StreamClient(security).request(("10.0.0.5", 7946), request, timeout=10)

Everything that fails to open is dropped and counted in ``.counters`` (a
:class:`DropCounters`), never delivered. Frames name their sender, recipient and channel:
give each driver the member name (``identity=``) and a shared :class:`PeerBook` that says who
listens where.
"""

from sdmesh.transport.codec import MalformedPacket, OversizePacket, PayloadTooLarge
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.gate import ConnectionGate
from sdmesh.transport.keyring import Keyring, KeyringError, key_id, permission_warning
from sdmesh.transport.peers import PeerBook
from sdmesh.transport.seal import (
    UNADDRESSED,
    Channel,
    FrameCodec,
    InsecureCodec,
    Opened,
    SealedCodec,
    identity_tag,
)
from sdmesh.transport.security import TransportSecurity, load_security
from sdmesh.transport.stream import (
    StreamClient,
    StreamError,
    StreamServer,
    StreamTimeout,
)
from sdmesh.transport.udp import EndpointClosed, UdpEndpoint

__all__ = [
    "UNADDRESSED",
    "Channel",
    "ConnectionGate",
    "DropCounters",
    "DropReason",
    "Dropped",
    "EndpointClosed",
    "FrameCodec",
    "InsecureCodec",
    "Keyring",
    "KeyringError",
    "MalformedPacket",
    "Opened",
    "OversizePacket",
    "PayloadTooLarge",
    "PeerBook",
    "SealedCodec",
    "StreamClient",
    "StreamError",
    "StreamServer",
    "StreamTimeout",
    "TransportSecurity",
    "UdpEndpoint",
    "identity_tag",
    "key_id",
    "load_security",
    "permission_warning",
]
