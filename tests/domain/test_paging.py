"""Page tokens: they round-trip, belong to exactly one query, and refuse anything forged."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.domain.paging import Page, decode_token, encode_token, query_fingerprint
from modelyard.errors import InvalidArgument


def _raw_token(payload: object) -> str:
    """A token built by hand (what a client tampering with a token would send)."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FP = query_fingerprint(["1", "2"], "metrics.acc > 0.5", (("metrics", "acc", False),), "all")


@given(offset=st.integers(min_value=0, max_value=2**63 - 1))
def test_token_roundtrip(offset: int) -> None:
    token = encode_token(offset, FP)
    assert decode_token(token, FP) == offset
    # URL-safe and unpadded: it goes into query strings untouched
    assert "=" not in token and "+" not in token and "/" not in token


def test_no_token_means_the_first_page() -> None:
    assert decode_token(None, FP) == 0
    assert decode_token("", FP) == 0


def test_fingerprint_depends_on_every_part_of_the_query() -> None:
    base = ("experiments", "active_only")
    assert query_fingerprint(*base) == query_fingerprint(*base)
    assert query_fingerprint(*base) != query_fingerprint("experiments", "all")
    assert query_fingerprint(["1"], "a") != query_fingerprint(["1"], "b")
    assert query_fingerprint(["1"], "a") != query_fingerprint(["2"], "a")


def test_token_of_another_query_is_refused() -> None:
    token = encode_token(10, FP)
    other = query_fingerprint(["1", "2"], "metrics.acc > 0.6", (), "all")
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, other)
    assert exc.value.field == "page_token"
    assert "does not belong to this query" in exc.value.message


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "%%%%",
        "a",  # impossible base64 length
        _raw_token(b"\xff\xfe\x00garbage"),  # not UTF-8 / not JSON
        _raw_token(b"{"),  # truncated JSON
        _raw_token([1, 2]),  # JSON, wrong shape
        _raw_token("just a string"),
        _raw_token(42),
        _raw_token(None),
        _raw_token({"o": 5}),  # fingerprint missing
        _raw_token({"q": FP}),  # offset missing
        _raw_token(b"[" * 100_000),  # nested beyond the JSON parser's recursion limit
    ],
)
def test_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, FP)
    assert exc.value.field == "page_token"


@pytest.mark.parametrize(
    "offset",
    [-1, 1.5, "10", None, [], {}, True, False, 2**63, 10**30],
)
def test_tampered_offset_is_refused(offset: object) -> None:
    """An offset that is not a plain non-negative 64-bit integer never reaches the database
    (a huge one would overflow SQLite's and PostgreSQL's OFFSET; ``true`` is not a number)."""
    with pytest.raises(InvalidArgument) as exc:
        decode_token(_raw_token({"o": offset, "q": FP}), FP)
    assert exc.value.field == "page_token"


def test_tampered_fingerprint_is_refused() -> None:
    token = encode_token(3, FP)
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data["q"] = "0" * len(FP)
    with pytest.raises(InvalidArgument):
        decode_token(_raw_token(data), FP)


def test_every_single_character_edit_is_refused_or_harmless() -> None:
    """Flipping any one character of a token either is refused or decodes to some offset of
    the same query: it can never be accepted for a different query."""
    token = encode_token(1234, FP)
    other = query_fingerprint("something else")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(token)):
        for ch in alphabet[::7]:
            forged = token[:i] + ch + token[i + 1 :]
            with pytest.raises(InvalidArgument):
                decode_token(forged, other)
            with contextlib.suppress(InvalidArgument):
                assert decode_token(forged, FP) >= 0


def test_page_is_a_sequence() -> None:
    page = Page([1, 2, 3], "tok")
    assert list(page) == [1, 2, 3]
    assert len(page) == 3
    assert page[1] == 2
    assert page.next_page_token == "tok"
    assert Page([]).next_page_token is None
