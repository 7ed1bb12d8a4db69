"""Local file helpers shared by both backends: chunked reading and verified atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import blake3

from modelyard.artifacts import page_cache
from modelyard.errors import IntegrityFailure, Unavailable

CHUNK = 1 << 20


def read_chunks(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def write_verified(chunks: Iterable[bytes | memoryview], dest: Path, *, digest: str | None,
                   size: int | None = None) -> int:
    """Write chunks to a temp file beside ``dest``, check the BLAKE3 digest, rename into place.

    A large file goes to disk as it arrives and is synced before the rename, without filling
    the page cache (:class:`modelyard.artifacts.page_cache.WriteBehind`).

    Returns:
        the number of bytes written.
    Raises:
        IntegrityFailure: the bytes do not hash to ``digest`` (dest is left untouched).
        Unavailable: fewer or more than ``size`` bytes arrived.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".modelyard-", dir=dest.parent)
    hasher = blake3.blake3()
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            behind = page_cache.WriteBehind(fd)
            for chunk in chunks:
                hasher.update(chunk)
                f.write(chunk)
                f.flush()
                written += len(chunk)
                behind.advanced(len(chunk))
            behind.finish()
        if size is not None and written != size:
            raise Unavailable(f"transfer of {dest.name!r} broke off after {written} bytes")
        if digest is not None and hasher.hexdigest() != digest:
            raise IntegrityFailure(f"downloaded bytes of {dest.name!r} do not match their digest")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written
