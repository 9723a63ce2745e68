"""The signature envelope: canonical, domain-separated, and strict about its encoding."""

from __future__ import annotations

import base64
import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import (
    DOMAIN,
    DescriptorSignature,
    SignatureFormatError,
    sign_descriptor,
    signed_bytes,
)

from .helpers import DIGEST


def test_an_envelope_round_trips_and_verifies() -> None:
    key = OperatorKey.generate("alice")
    envelope = sign_descriptor(key, "web", DIGEST, Role.OPERATE, 1_700_000_000.7)
    assert envelope.signed_at == 1_700_000_000 and envelope.key_id == key.public.key_id
    for again in (
        DescriptorSignature.decode(envelope.encode()),
        DescriptorSignature.from_text(envelope.to_text()),
    ):
        assert again == envelope
        assert key.public.verify(again.signature, again.signed_bytes())
    assert len(envelope.encode()) < 300


def test_what_is_signed_is_domain_separated_and_covers_every_field() -> None:
    key = OperatorKey.generate("alice")
    envelope = sign_descriptor(key, "web", DIGEST, Role.OPERATE, 1000)
    assert envelope.signed_bytes().startswith(DOMAIN)
    # The same fields signed without the domain prefix do not verify.
    bare = envelope.signed_bytes()[len(DOMAIN) :]
    assert not key.public.verify(key.sign(bare), envelope.signed_bytes())
    for change in (
        {"pool": "web2"},
        {"digest": "cd" * 32},
        {"signer": "mallory"},
        {"signed_at": 1001},
        {"role": Role.ADMIN},
    ):
        altered = dataclasses.replace(envelope, **change)  # type: ignore[arg-type]
        assert not key.public.verify(altered.signature, altered.signed_bytes()), change
    assert signed_bytes("a", "b", "0" * 64, "n", 1, Role.READ) != signed_bytes(
        "a", "b", "0" * 64, "n", 1, Role.OPERATE
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"v": 1}),
        msgpack.packb([2, "p", DIGEST, "0" * 64, "n", 1, "operate", b"s" * 64]),
        msgpack.packb([1, "p", DIGEST, "0" * 15, "n", 1, "operate", b"s" * 64]),
        msgpack.packb([1, "p", DIGEST, "0" * 64, "n", 1, "root", b"s" * 64]),
        msgpack.packb([1, "p", DIGEST, "0" * 64, "n", 1, "operate", b"s" * 63]),
        msgpack.packb([1, "p", DIGEST, "0" * 64, "n", True, "operate", b"s" * 64]),
        msgpack.packb([1, "p", DIGEST, "0" * 64, "n", 1, "operate", "s" * 64]),
        msgpack.packb([1, "p", "d", "0" * 64, "n", 1, "operate", b"s" * 64]),
        msgpack.packb([1, "p\n", DIGEST, "0" * 64, "n", 1, "operate", b"s" * 64]),
        msgpack.packb([1, "p", DIGEST, "0" * 64, "\x1b[31mroot", 1, "operate", b"s" * 64]),
        b"\x00" * 2000,
    ],
)
def test_malformed_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(SignatureFormatError):
        DescriptorSignature.decode(data)


@pytest.mark.parametrize("text", [None, 3, "***", "A" * 5000, base64.b64encode(b"x").decode()])
def test_malformed_api_text_is_refused(text: object) -> None:
    with pytest.raises(SignatureFormatError):
        DescriptorSignature.from_text(text)


def test_a_well_formed_envelope_of_other_fields_decodes() -> None:
    data = msgpack.packb([1, "p", DIGEST, "0" * 64, "n", 1, "operate", b"s" * 64])
    assert DescriptorSignature.decode(data).pool == "p"
    short = msgpack.packb([1, "p", DIGEST, "0" * 16, "n", 1, "operate", b"s" * 64])
    with pytest.raises(SignatureFormatError, match="malformed key id"):
        DescriptorSignature.decode(short)  # a 64-bit id is no longer a key id


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_are_refused_cleanly(data: bytes) -> None:
    with contextlib.suppress(SignatureFormatError):
        DescriptorSignature.decode(data)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.text(max_size=70),
            st.binary(max_size=70),
            st.none(),
            st.booleans(),
        ),
        max_size=9,
    )
)
@settings(max_examples=300, deadline=None)
def test_any_msgpack_list_decodes_or_is_refused_cleanly(items: list[object]) -> None:
    with contextlib.suppress(SignatureFormatError):
        DescriptorSignature.decode(msgpack.packb(items, use_bin_type=True))
