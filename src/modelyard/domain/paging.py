"""Pages of results and the opaque tokens that continue them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from modelyard.errors import InvalidArgument

T = TypeVar("T")
_MAX_OFFSET = 2**63 - 1  # what SQLite's and PostgreSQL's OFFSET accept


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results; ``next_page_token`` is None on the last page."""

    items: Sequence[T]
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


def query_fingerprint(*parts: object) -> str:
    """A short digest of the query a token belongs to, so a token cannot be replayed elsewhere."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


def encode_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, fingerprint: str) -> int:
    """The offset a token continues from (0 for no token).

    Raises:
        InvalidArgument: the token is malformed or belongs to a different query.
    """
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["o"]
        fp = data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidArgument("page_token is malformed", field="page_token") from None
    # bool is an int subclass; an offset beyond 64 bits would overflow the database's OFFSET
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int)
        or not 0 <= offset <= _MAX_OFFSET
        or fp != fingerprint
    ):
        raise InvalidArgument(
            "page_token does not belong to this query (filter, order or experiments changed)",
            field="page_token",
        )
    return offset
