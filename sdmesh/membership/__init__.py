"""Sans-IO membership: SWIM with Lifeguard, as events in and actions out.

Typical driver loop::

    core = Membership(MembershipConfig(), Member("host-a", ("10.0.0.1", 7946), meta=...), rng)
    actions = core.handle(Start(), now)
    actions += core.handle(JoinRequested((seed_addr,)), now)
    # then, forever: execute actions; turn datagrams (after transport decoding), stream
    # payloads and fired timers into events; call core.handle(event, now).
    actions = core.handle(Publish("pools", "pool-7", b"terminated"), now)  # -> RumorLearned
"""

from sdmesh.membership.actions import (
    Action,
    CancelTimer,
    ForceLeaveOutcome,
    ForceLeaveResult,
    JoinCompleted,
    JoinFailed,
    LeaveCompleted,
    MemberEvent,
    MemberEventKind,
    OpenStream,
    ReplyStream,
    RumorLearned,
    Send,
    SetTimer,
)
from sdmesh.membership.config import MembershipConfig
from sdmesh.membership.core import Membership, Phase, Stats
from sdmesh.membership.events import (
    Event,
    ForceLeave,
    JoinRequested,
    LeaveRequested,
    MetaUpdated,
    Preload,
    Publish,
    Received,
    Revoke,
    Start,
    StreamFailed,
    StreamReceived,
    TimerFired,
)
from sdmesh.membership.member import Address, Member, Meta, State
from sdmesh.membership.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    Message,
    Nack,
    PacketMessage,
    Ping,
    PingReq,
    PushPull,
    Rumor,
    RumorUpdate,
    Suspect,
    decode,
    decode_packet,
    decode_stream,
)
from sdmesh.membership.wire import MalformedMessage

__all__ = [
    "Ack",
    "Action",
    "Address",
    "Alive",
    "CancelTimer",
    "Compound",
    "Dead",
    "Event",
    "ForceLeave",
    "ForceLeaveOutcome",
    "ForceLeaveResult",
    "JoinCompleted",
    "JoinFailed",
    "JoinRequested",
    "LeaveCompleted",
    "LeaveRequested",
    "MalformedMessage",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "Membership",
    "MembershipConfig",
    "Message",
    "Meta",
    "MetaUpdated",
    "Nack",
    "OpenStream",
    "PacketMessage",
    "Phase",
    "Ping",
    "PingReq",
    "Preload",
    "Publish",
    "PushPull",
    "Received",
    "ReplyStream",
    "Revoke",
    "Rumor",
    "RumorLearned",
    "RumorUpdate",
    "Send",
    "SetTimer",
    "Start",
    "State",
    "Stats",
    "StreamFailed",
    "StreamReceived",
    "Suspect",
    "TimerFired",
    "decode",
    "decode_packet",
    "decode_stream",
]
