"""Pages of results and the opaque tokens that continue them.

A token is a keyset cursor: the sort values of the last item returned, bound to the query it
came from. The next page starts strictly after that item, so rows inserted or removed while a
client pages never make a page repeat or skip an item that was there when paging began (an
OFFSET would shift under them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from modelyard.errors import InvalidArgument

T = TypeVar("T")
CursorValue = None | int | float | str
MAX_TOKEN_CHARS = 16_384
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results; ``next_page_token`` is None on the last page. ``total`` is the
    number of items matching the query, when it was asked for."""

    items: Sequence[T]
    next_page_token: str | None = None
    total: int | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


def query_fingerprint(*parts: object) -> str:
    """A short digest of the query a token belongs to, so a token cannot be replayed elsewhere."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


def encode_cursor(values: Sequence[CursorValue], fingerprint: str) -> str:
    raw = json.dumps({"k": list(values), "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_cursor_value(v: object) -> bool:
    if v is None or isinstance(v, str):
        return True
    if isinstance(v, bool):  # an int subclass, never a sort value
        return False
    if isinstance(v, int):
        return -_INT64 <= v < _INT64
    return isinstance(v, float) and not math.isnan(v)


def decode_cursor(token: str | None, fingerprint: str) -> list[CursorValue] | None:
    """The sort values a token continues after (None for no token: the first page).

    Raises:
        InvalidArgument: the token is malformed or belongs to a different query.
    """
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("page_token is malformed (too long)", field="page_token")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        values = data["k"]
        fp = data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidArgument("page_token is malformed", field="page_token") from None
    if fp != fingerprint:
        raise InvalidArgument(
            "page_token does not belong to this query (filter, order or experiments changed)",
            field="page_token",
        )
    if not isinstance(values, list) or not all(_is_cursor_value(v) for v in values):
        raise InvalidArgument("page_token is malformed", field="page_token")
    return values
