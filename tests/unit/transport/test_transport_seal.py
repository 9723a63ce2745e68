"""Sealing and opening frames: authentication, key rotation, replay, freshness, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdmesh.transport.seal as seal_module
from sdmesh.transport.codec import Limits, PayloadTooLarge
from sdmesh.transport.drops import DropCounters, Dropped, DropReason
from sdmesh.transport.keyring import KEY_SIZE, Keyring, key_id
from sdmesh.transport.seal import (
    HEADER,
    OVERHEAD,
    Channel,
    InsecureCodec,
    SealedCodec,
    identity_tag,
)

K1, K2, K3 = (bytes([n]) * KEY_SIZE for n in (1, 2, 3))
NOW = 1_700_000_000.0
DGRAM = Channel.DATAGRAM
MESSAGE = {"type": "ping", "seq": 42, "from": "node-a", "meta": {"cpu": 16, "labels": ["x"]}}


def codec(*keys: bytes, **options: object) -> SealedCodec:
    options.setdefault("max_frame", 1400)
    return SealedCodec(Keyring(list(keys)), **options)  # type: ignore[arg-type]


def reason(receiver: SealedCodec | InsecureCodec, frame: bytes, **kwargs: object) -> DropReason:
    kwargs.setdefault("channel", DGRAM)
    kwargs.setdefault("now", NOW)
    with pytest.raises(Dropped) as err:
        receiver.open(frame, **kwargs)  # type: ignore[arg-type]
    return err.value.reason


def talks(sender: SealedCodec, receiver: SealedCodec) -> bool:
    try:
        receiver.open(sender.seal(MESSAGE, channel=DGRAM, now=NOW), channel=DGRAM, now=NOW)
    except Dropped:
        return False
    return True


def test_round_trip() -> None:
    alice, bob = codec(K1), codec(K1)
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    opened = bob.open(frame, channel=DGRAM, now=NOW)
    assert opened.obj == MESSAGE
    assert opened.session == alice.session
    assert opened.seq == 0
    assert len(frame) == OVERHEAD + len(seal_module.encode(MESSAGE, Limits(1400)))
    assert bob.counters.total == 0


def test_frames_carry_the_primary_key_id_and_fresh_nonces() -> None:
    alice = codec(K1, K2)
    first = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    second = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert first[1:5] == key_id(K1)
    assert first[HEADER.size :] != second[HEADER.size :]  # counter nonce differs


def test_every_tampered_byte_is_dropped() -> None:
    alice = codec(K1)
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    expected = {0: DropReason.BAD_VERSION} | dict.fromkeys(range(1, 5), DropReason.UNKNOWN_KEY)
    for index in range(len(frame)):
        bob = codec(K1)
        tampered = bytearray(frame)
        tampered[index] ^= 0x01
        assert reason(bob, bytes(tampered)) == expected.get(index, DropReason.AUTH_FAILED), index
    assert codec(K1).open(frame, channel=DGRAM, now=NOW).obj == MESSAGE


def test_a_key_we_do_not_have_is_unknown() -> None:
    bob = codec(K2)
    assert reason(bob, codec(K1).seal(MESSAGE, channel=DGRAM, now=NOW)) == DropReason.UNKNOWN_KEY
    assert bob.counters.unknown_key == 1


def test_a_forged_key_id_fails_authentication() -> None:
    mallory_frame = bytearray(codec(K3).seal(MESSAGE, channel=DGRAM, now=NOW))
    mallory_frame[1:5] = key_id(K1)  # claim the cluster key
    assert reason(codec(K1), bytes(mallory_frame)) == DropReason.AUTH_FAILED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session", b"\x00" * 16),
        ("seq", 7),
        ("sent_ms", int(NOW * 1000) + 1),
        ("channel", Channel.DHT),
        ("sender", b"\x01" * 8),
        ("recipient", b"\x00" * 8),
    ],
)
def test_forged_header_fields_fail_authentication(field: str, value: object) -> None:
    frame = codec(K1).seal(MESSAGE, channel=DGRAM, now=NOW, recipient=identity_tag("b"))
    names = ("version", "kid", "session", "seq", "sent_ms", "channel", "sender", "recipient")
    fields = dict(zip(names, HEADER.unpack_from(frame), strict=True))
    fields[field] = value
    forged = HEADER.pack(*fields.values()) + frame[HEADER.size :]
    assert reason(codec(K1), forged) == DropReason.AUTH_FAILED


def test_replays_are_rejected_and_reordering_is_not() -> None:
    alice, bob = codec(K1), codec(K1)
    frames = [alice.seal(n, channel=DGRAM, now=NOW) for n in range(20)]
    assert [bob.open(f, channel=DGRAM, now=NOW).obj for f in reversed(frames)] == list(
        range(19, -1, -1)
    )
    assert reason(bob, frames[3]) == DropReason.REPLAY
    assert bob.counters.replay == 1


def test_frames_older_than_the_window_are_rejected() -> None:
    alice, bob = codec(K1, replay_window=64), codec(K1, replay_window=64)
    old = alice.seal("old", channel=DGRAM, now=NOW)
    for n in range(64):
        alice.seal(n, channel=DGRAM, now=NOW)
    bob.open(alice.seal("new", channel=DGRAM, now=NOW), channel=DGRAM, now=NOW)
    assert reason(bob, old) == DropReason.REPLAY


def test_a_restarted_sender_is_accepted() -> None:
    bob = codec(K1)
    for _ in range(300):
        assert talks(codec(K1), bob)  # each a new process: new session, seq from 0


def test_our_own_frames_reflected_back_are_rejected() -> None:
    alice = codec(K1)
    assert reason(alice, alice.seal(MESSAGE, channel=DGRAM, now=NOW)) == DropReason.REPLAY


def test_a_failed_frame_does_not_burn_its_sequence_number() -> None:
    alice, bob = codec(K1), codec(K1)
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    tampered = frame[:-1] + bytes([frame[-1] ^ 1])
    assert reason(bob, tampered) == DropReason.AUTH_FAILED
    assert bob.open(frame, channel=DGRAM, now=NOW).obj == MESSAGE


def test_stale_and_future_frames_are_rejected() -> None:
    alice, bob = codec(K1), codec(K1, max_clock_skew=60)
    assert reason(bob, alice.seal(1, channel=DGRAM, now=NOW - 61)) == DropReason.STALE
    assert reason(bob, alice.seal(2, channel=DGRAM, now=NOW + 61)) == DropReason.STALE
    assert bob.open(alice.seal(3, channel=DGRAM, now=NOW - 59), channel=DGRAM, now=NOW).obj == 3
    lenient = codec(K1, max_clock_skew=None)
    assert lenient.open(alice.seal(4, channel=DGRAM, now=0.0), channel=DGRAM, now=NOW).obj == 4


def test_a_stale_frame_is_not_recorded_as_seen() -> None:
    alice, bob = codec(K1), codec(K1, max_clock_skew=60)
    frame = alice.seal(1, channel=DGRAM, now=NOW)
    assert reason(bob, frame, now=NOW + 600) == DropReason.STALE
    assert bob.open(frame, channel=DGRAM, now=NOW).obj == 1


def test_channel_cluster_and_context_are_bound() -> None:
    alice = codec(K1, cluster="prod")
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert reason(codec(K1, cluster="prod"), frame, channel=Channel.STREAM_REQUEST) == (
        DropReason.MISDIRECTED
    )
    assert reason(codec(K1, cluster="test"), frame) == DropReason.AUTH_FAILED
    assert reason(codec(K1, cluster="prod"), frame, context=b"request") == DropReason.AUTH_FAILED
    bound = alice.seal(MESSAGE, channel=Channel.STREAM_RESPONSE, now=NOW, context=b"request")
    bob = codec(K1, cluster="prod")
    assert reason(bob, bound, channel=Channel.STREAM_RESPONSE, context=b"other") == (
        DropReason.AUTH_FAILED
    )
    assert bob.open(bound, channel=Channel.STREAM_RESPONSE, now=NOW, context=b"request")


def test_binding_is_the_header() -> None:
    alice = codec(K1)
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert alice.binding(frame) == frame[: HEADER.size]


def test_size_limits() -> None:
    alice, bob = codec(K1, max_frame=200), codec(K1, max_frame=200)
    with pytest.raises(PayloadTooLarge):
        alice.seal(b"x" * (200 - OVERHEAD), channel=DGRAM, now=NOW)
    fits = alice.seal(b"x" * (200 - OVERHEAD - 2), channel=DGRAM, now=NOW)
    assert len(fits) == 200 and bob.open(fits, channel=DGRAM, now=NOW)
    assert reason(bob, fits + b"\x00") == DropReason.OVERSIZE
    assert reason(bob, b"") == DropReason.MALFORMED
    assert reason(bob, fits[: OVERHEAD - 1]) == DropReason.MALFORMED
    with pytest.raises(ValueError):
        codec(K1, max_frame=OVERHEAD)


def test_authentic_but_malformed_plaintext_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = codec(K1), codec(K1)
    monkeypatch.setattr(seal_module, "encode", lambda obj, limits: b"\x92\xc0")
    frame = alice.seal(None, channel=DGRAM, now=NOW)
    monkeypatch.undo()
    assert reason(bob, frame) == DropReason.MALFORMED
    assert bob.counters.as_dict() == DropCounters(malformed=1).as_dict()


def test_rotation_without_downtime() -> None:
    ring_a, ring_b = Keyring([K1]), Keyring([K2, K1])
    a1, b1 = SealedCodec(ring_a, max_frame=1400), SealedCodec(ring_b, max_frame=1400)
    a2, b2 = SealedCodec(ring_a, max_frame=1400), SealedCodec(ring_b, max_frame=1400)
    # B seals with k2, which A lacks: only A -> B works.
    assert talks(a1, b1) and not talks(b1, a1)
    assert a1.counters.unknown_key == 1
    # Step 1: every node installs k2. Both directions work (A seals k1, B seals k2).
    ring_a.install(K2)
    assert talks(a1, b1) and talks(b1, a1)
    # Step 2: every node uses k2.
    ring_a.use(K2)
    assert a2.seal(0, channel=DGRAM, now=NOW)[1:5] == key_id(K2)
    assert talks(a1, b1) and talks(b1, a1)
    # Step 3: k1 is retired; frames still sealed with it are no longer accepted.
    late_k1 = SealedCodec(Keyring([K1]), max_frame=1400).seal(0, channel=DGRAM, now=NOW)
    ring_a.remove(K1)
    ring_b.remove(K1)
    assert talks(a1, b1) and talks(b1, a1) and talks(a2, b2)
    assert reason(a2, late_k1) == DropReason.UNKNOWN_KEY


def test_a_removed_key_stops_opening_even_for_known_sessions() -> None:
    ring = Keyring([K2, K1])
    alice, bob = codec(K1), SealedCodec(ring, max_frame=1400)
    assert talks(alice, bob)  # bob now caches alice's k1 session key
    ring.remove(K1)
    assert not talks(alice, bob)
    assert bob.counters.unknown_key == 1


def test_insecure_codec_round_trip_and_strictness() -> None:
    plain = InsecureCodec(max_frame=1400)
    frame = plain.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert plain.open(frame, channel=DGRAM, now=NOW).obj == MESSAGE
    assert plain.binding(frame) == b""
    assert reason(plain, frame, channel=Channel.STREAM_REQUEST) == DropReason.MALFORMED
    assert reason(plain, frame[:1]) == DropReason.MALFORMED
    assert reason(plain, frame + b"\xc0") == DropReason.MALFORMED
    assert reason(plain, frame[:2] + b"\xc1") == DropReason.MALFORMED
    assert reason(plain, b"") == DropReason.MALFORMED
    assert reason(plain, frame + b"\x00" * 1400) == DropReason.OVERSIZE
    with pytest.raises(PayloadTooLarge):
        plain.seal(b"x" * 1400, channel=DGRAM, now=NOW)


def test_secure_and_insecure_nodes_refuse_each_other_by_version() -> None:
    plain, sealed = InsecureCodec(max_frame=1400), codec(K1)
    with pytest.raises(Dropped, match="--insecure"):
        sealed.open(plain.seal(1, channel=DGRAM, now=NOW), channel=DGRAM, now=NOW)
    with pytest.raises(Dropped, match="--insecure"):
        plain.open(sealed.seal(1, channel=DGRAM, now=NOW), channel=DGRAM, now=NOW)
    assert sealed.counters.bad_version == plain.counters.bad_version == 1
    assert reason(sealed, b"\x99" + bytes(100)) == DropReason.BAD_VERSION


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=2000), channel=st.sampled_from(Channel))
def test_fuzz_random_bytes_are_only_ever_counted_drops(data: bytes, channel: Channel) -> None:
    for receiver in (codec(K1), InsecureCodec(max_frame=1400)):
        try:
            receiver.open(data, channel=channel, now=NOW)
        except Dropped:
            pass
        else:  # pragma: no cover - would be a forgery
            pytest.fail("random bytes opened")
        assert receiver.counters.total == 1


SEALED_FRAME = codec(K1).seal(MESSAGE, channel=DGRAM, now=NOW)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(SEALED_FRAME) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.integers(0, len(SEALED_FRAME)),
)
def test_fuzz_mutated_frames_never_open(edits: list[tuple[int, int]], cut: int) -> None:
    mutated = bytearray(SEALED_FRAME)
    for index, flip in edits:
        mutated[index] ^= flip
    candidate = bytes(mutated[:cut]) if cut < len(SEALED_FRAME) else bytes(mutated)
    if candidate == SEALED_FRAME:
        return
    bob = codec(K1)
    with pytest.raises(Dropped):
        bob.open(candidate, channel=DGRAM, now=NOW)
    assert bob.counters.total == 1


@FUZZ
@given(plaintext=st.binary(max_size=500))
def test_fuzz_authentic_garbage_is_dropped_as_malformed(plaintext: bytes) -> None:
    alice, bob = codec(K1), codec(K1)
    original = seal_module.encode
    seal_module.encode = lambda obj, limits: plaintext  # type: ignore[assignment]
    try:
        frame = alice.seal(None, channel=DGRAM, now=NOW)
    finally:
        seal_module.encode = original
    try:
        bob.open(frame, channel=DGRAM, now=NOW)
    except Dropped as dropped:
        assert dropped.reason == DropReason.MALFORMED
    assert bob.counters.total in (0, 1)


def test_frames_name_their_recipient_and_channel() -> None:
    """Issue 12: a frame sniffed on its way to one member opens nowhere else, and not on
    another channel (the DHT port); both are counted as ``misdirected``, after the tag."""
    alice, bob, carol = codec(K1, identity="a"), codec(K1, identity="b"), codec(K1, identity="c")
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW, recipient=identity_tag("c"))
    assert reason(bob, frame) == DropReason.MISDIRECTED
    assert reason(codec(K1, identity="c"), frame, channel=Channel.DHT) == DropReason.MISDIRECTED
    opened = carol.open(frame, channel=DGRAM, now=NOW)
    assert opened.obj == MESSAGE and opened.addressed and opened.sender == identity_tag("a")
    assert bob.counters.misdirected == 1 and carol.counters.total == 0
    anyone = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert not bob.open(anyone, channel=DGRAM, now=NOW).addressed
    with pytest.raises(ValueError):
        alice.seal(MESSAGE, channel=DGRAM, now=NOW, recipient=b"c")


def test_identity_tags_are_fixed_size_and_never_unaddressed() -> None:
    assert identity_tag("") == seal_module.UNADDRESSED
    assert len(identity_tag("a" * 300)) == seal_module.IDENTITY_TAG_SIZE
    assert identity_tag("a") == identity_tag(b"a") != identity_tag("b")


def test_version_one_frames_are_refused_with_a_reason() -> None:
    old = bytearray(codec(K1).seal(MESSAGE, channel=DGRAM, now=NOW))
    old[0] = seal_module.SEALED_V1
    with pytest.raises(Dropped, match="upgrade"):
        codec(K1).open(bytes(old), channel=DGRAM, now=NOW)


def test_a_replay_is_refused_before_the_tag_and_a_forgery_cannot_move_the_window() -> None:
    alice, bob = codec(K1), codec(K1)
    frame = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    bob.open(frame, channel=DGRAM, now=NOW)
    tampered = frame[:-1] + bytes([frame[-1] ^ 1])
    assert reason(bob, tampered) == DropReason.REPLAY  # same (session, seq): no AEAD spent
    later = alice.seal(MESSAGE, channel=DGRAM, now=NOW)
    assert reason(bob, later[:-1] + bytes([later[-1] ^ 1])) == DropReason.AUTH_FAILED
    assert bob.open(later, channel=DGRAM, now=NOW).obj == MESSAGE  # the forgery took no seq
