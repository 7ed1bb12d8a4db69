"""Page tokens: keyset cursors that round-trip, belong to exactly one query, refuse forgeries."""

from __future__ import annotations

import base64
import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.domain.paging import (
    MAX_TOKEN_CHARS,
    Page,
    decode_cursor,
    encode_cursor,
    query_fingerprint,
)
from modelyard.errors import InvalidArgument


def _raw_token(payload: object) -> str:
    """A token built by hand (what a client tampering with a token would send)."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FP = query_fingerprint(["1", "2"], "metrics.acc > 0.5", (("metrics", "acc", False),), "all")

cursor_values = st.lists(
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    max_size=6,
)


@given(values=cursor_values)
def test_cursor_roundtrip(values: list[object]) -> None:
    token = encode_cursor(values, FP)  # type: ignore[arg-type]
    decoded = decode_cursor(token, FP)
    assert decoded == values
    # types survive too: an integral float stays a float, an int stays an int
    assert [type(v) for v in decoded or []] == [type(v) for v in values]
    # URL-safe and unpadded: it goes into query strings untouched
    assert "=" not in token and "+" not in token and "/" not in token


def test_infinities_round_trip() -> None:
    assert decode_cursor(encode_cursor([math.inf, -math.inf], FP), FP) == [math.inf, -math.inf]


def test_no_token_means_the_first_page() -> None:
    assert decode_cursor(None, FP) is None
    assert decode_cursor("", FP) is None


def test_fingerprint_depends_on_every_part_of_the_query() -> None:
    base = ("experiments", "active_only")
    assert query_fingerprint(*base) == query_fingerprint(*base)
    assert query_fingerprint(*base) != query_fingerprint("experiments", "all")
    assert query_fingerprint(["1"], "a") != query_fingerprint(["1"], "b")
    assert query_fingerprint(["1"], "a") != query_fingerprint(["2"], "a")


def test_token_of_another_query_is_refused() -> None:
    token = encode_cursor([10, "abc"], FP)
    other = query_fingerprint(["1", "2"], "metrics.acc > 0.6", (), "all")
    with pytest.raises(InvalidArgument) as exc:
        decode_cursor(token, other)
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
        _raw_token({"k": [5]}),  # fingerprint missing
        _raw_token({"q": FP}),  # values missing
        _raw_token({"k": 5, "q": FP}),  # values not a list
        _raw_token({"k": [True], "q": FP}),  # a bool is not a sort value
        _raw_token({"k": [[1]], "q": FP}),  # nor a list
        _raw_token({"k": [{"a": 1}], "q": FP}),
        _raw_token({"k": [2**63], "q": FP}),  # beyond 64 bits: would overflow the database
        _raw_token(b'{"k": [NaN], "q": "' + FP.encode() + b'"}'),  # NaN never sorts
        _raw_token(b"[" * 100_000),  # nested beyond the JSON parser's recursion limit
        "A" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_cursor(token, FP)
    assert exc.value.field == "page_token"


def test_tampered_fingerprint_is_refused() -> None:
    token = encode_cursor([3], FP)
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data["q"] = "0" * len(FP)
    with pytest.raises(InvalidArgument):
        decode_cursor(_raw_token(data), FP)


def test_every_single_character_edit_is_refused_or_harmless() -> None:
    """Flipping any one character of a token either is refused or decodes to some cursor of
    the same query: it can never be accepted for a different query."""
    token = encode_cursor([1234, "run"], FP)
    other = query_fingerprint("something else")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(token)):
        for ch in alphabet[::7]:
            forged = token[:i] + ch + token[i + 1 :]
            with pytest.raises(InvalidArgument):
                decode_cursor(forged, other)
            with contextlib.suppress(InvalidArgument):
                assert isinstance(decode_cursor(forged, FP), list)


def test_page_is_a_sequence() -> None:
    page = Page([1, 2, 3], "tok")
    assert list(page) == [1, 2, 3]
    assert len(page) == 3
    assert page[1] == 2
    assert page.next_page_token == "tok"
    assert page.total is None
    assert Page([]).next_page_token is None
    assert Page([1], None, 7).total == 7
