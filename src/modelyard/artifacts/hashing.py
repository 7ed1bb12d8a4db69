"""BLAKE3 content digests, computed while streaming.

A digest is the 64-character lowercase hex BLAKE3 of a blob's bytes. It is the blob's only name,
so every digest that arrives from outside goes through :func:`validate_digest` before it comes
anywhere near a path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

from modelyard.errors import InvalidArgument

__all__ = [
    "CHUNK_SIZE",
    "DIGEST_LENGTH",
    "BlobRef",
    "hash_bytes",
    "hash_file",
    "hash_stream",
    "iter_file_chunks",
    "validate_digest",
]

CHUNK_SIZE = 1 << 20
"""Bytes read, hashed and written per step: memory use stays constant whatever the blob size."""

DIGEST_LENGTH = 64

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A stored blob: its BLAKE3 hex digest and its size in bytes."""

    digest: str
    size: int


def validate_digest(digest: object, *, field: str = "digest") -> str:
    """Return ``digest`` if it is exactly 64 lowercase hex characters.

    Args:
        digest: the value to check (anything: it usually comes from a user).
        field: the input field named in the error.

    Returns:
        The digest, unchanged.

    Raises:
        InvalidArgument: ``digest`` is not a string of 64 lowercase hex characters.
    """
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidArgument(
            "a digest must be exactly 64 lowercase hexadecimal characters (a BLAKE3 hex digest)",
            field=field,
        )
    return digest


def hash_bytes(data: bytes) -> str:
    """Return the BLAKE3 hex digest of ``data``."""
    return blake3(data).hexdigest()


def hash_stream(chunks: Iterable[bytes]) -> BlobRef:
    """Hash an iterable of byte chunks without joining them.

    Returns:
        The digest and total size of the concatenated chunks.
    """
    hasher = blake3()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return BlobRef(digest=hasher.hexdigest(), size=size)


def iter_file_chunks(path: Path, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the content of a local file in chunks of at most ``chunk_size`` bytes."""
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def hash_file(path: Path) -> BlobRef:
    """Hash a local file in 1 MiB steps (constant memory, whatever its size).

    Args:
        path: a local regular file.

    Returns:
        Its digest and size.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` if it is absent).
    """
    return hash_stream(iter_file_chunks(path))
