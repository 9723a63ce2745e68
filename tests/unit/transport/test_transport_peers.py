"""The peer book: who listens at an address, as membership said."""

from __future__ import annotations

import pytest

from sdmesh.transport import UNADDRESSED, PeerBook, identity_tag


def test_introduced_addresses_get_their_tag_others_none() -> None:
    book = PeerBook()
    book.introduce(("10.0.0.5", 7946), "b")
    assert book.recipient(("10.0.0.5", 7946)) == identity_tag("b")
    assert book.recipient(("10.0.0.5", 7947)) == UNADDRESSED
    assert book.recipient(("not an ip", 1)) == UNADDRESSED
    book.introduce(("0::1", 7946), "c")
    assert book.recipient(("::1", 7946, 0, 0)) == identity_tag("c")
    book.forget(("::1", 7946))
    assert book.recipient(("::1", 7946)) == UNADDRESSED


def test_a_new_member_at_an_old_address_replaces_it_and_the_book_is_bounded() -> None:
    book = PeerBook(max_peers=2)
    book.introduce(("10.0.0.1", 1), "a")
    book.introduce(("10.0.0.1", 1), "a2")
    assert book.recipient(("10.0.0.1", 1)) == identity_tag("a2")
    book.introduce(("10.0.0.2", 1), "b")
    book.introduce(("10.0.0.3", 1), "c")
    assert len(book) == 2 and book.recipient(("10.0.0.1", 1)) == UNADDRESSED
    with pytest.raises(ValueError):
        book.introduce(("host.example", 1), "x")
