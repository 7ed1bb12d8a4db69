"""Local file helpers shared by both backends: chunked reading and verified atomic writes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import blake3

from modelyard.artifacts import page_cache
from modelyard.errors import IntegrityFailure, Unavailable

CHUNK = 1 << 20

# A new file's mode before the umask: as open() and the shell create files (0644 under umask
# 022). tempfile.mkstemp would make every downloaded or exported file 0600 whatever the umask.
FILE_MODE = 0o666
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_BINARY", 0))


def read_chunks(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def create_beside(dest: Path) -> tuple[int, Path]:
    """Create a new, empty temp file in ``dest``'s folder, to be renamed onto ``dest``.

    Its name is unpredictable and it is created exclusively (never an existing file or a
    symlink); its mode is :data:`FILE_MODE` less the umask, the mode ``dest`` would get if it
    were written directly, so the rename leaves the file as any other the user creates.

    Returns:
        the open descriptor (write-only) and the temp file's path.
    """
    for _ in range(100):
        tmp = dest.parent / f".modelyard-{secrets.token_hex(8)}"
        try:
            return os.open(tmp, _CREATE, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {dest}")


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
    fd, tmp = create_beside(dest)
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
        tmp.unlink(missing_ok=True)
        raise
    return written
