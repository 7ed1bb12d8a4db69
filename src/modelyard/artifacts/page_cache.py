"""Large blobs pass through the server without settling in the operating system's page cache.

A multi-gigabyte checkpoint read or written once would otherwise push out what the server
reads all the time (the metadata database's pages, small artifacts), and the memory it fills
stays taken. So the local blob store tells the kernel, once a stretch of a large file is on
disk or has been sent, that it will not be needed again soon (``POSIX_FADV_DONTNEED``). The
pages it frees are reused at once by the next stretch: a transfer of any size keeps a few MiB
of cache, not the file's size. Small files keep the default caching.

Writing is the same with one step more: pages are dropped only once they are on disk, so a
large file being written is sent to disk a stretch at a time as it grows
(``sync_file_range``, Linux), and the stretch before is released once written: the disk works
while the next stretch arrives. Such a file is also synced before it is called done.

Only hints: where ``posix_fadvise`` is missing (not POSIX) nothing is released, and without
``sync_file_range`` (not Linux) a large file is only synced at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import cast

LARGE_FILE = 16 << 20
"""Files at least this big are streamed without caching (multipart parts are this size)."""

_ADVISE = getattr(os, "posix_fadvise", None)

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # sync_file_range(2) flags


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", fn)


_SYNC_RANGE = _find_sync_file_range()


def release(fd: int, offset: int, length: int) -> None:
    """Drop the clean cached pages of ``length`` bytes of ``fd`` from ``offset`` (dirty pages
    are kept by the kernel: call it after the bytes are synced or were only read)."""
    if _ADVISE is not None and length > 0:
        with contextlib.suppress(OSError):  # a filesystem that ignores the hint is fine
            _ADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)


def read_ahead(fd: int) -> None:
    """Tell the kernel ``fd`` is about to be read from start to end (larger read-ahead)."""
    if _ADVISE is not None:
        with contextlib.suppress(OSError):
            _ADVISE(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


class ReleasingReader:
    """Reads a file sequentially and releases what was read every ``LARGE_FILE`` bytes."""

    def __init__(self, fd: int, start: int = 0) -> None:
        self._fd = fd
        self._released = start
        self._pos = start
        read_ahead(fd)

    def advanced(self, n: int) -> None:
        """Note ``n`` more bytes read; release them once a stretch is complete."""
        self._pos += n
        if self._pos - self._released >= LARGE_FILE:
            self.flush()

    def flush(self) -> None:
        release(self._fd, self._released, self._pos - self._released)
        self._released = self._pos


def releasing_reader(f: object, start: int = 0) -> ReleasingReader | None:
    """A :class:`ReleasingReader` for an open local file of at least ``LARGE_FILE`` bytes
    about to be read from ``start``; None for a smaller file or one with no descriptor."""
    fileno = getattr(f, "fileno", None)
    if _ADVISE is None or fileno is None:
        return None
    try:
        fd = fileno()
        if os.fstat(fd).st_size < LARGE_FILE:
            return None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return ReleasingReader(fd, start)


def released_behind(f: object, chunks: Iterable[bytes], start: int = 0) -> Iterator[bytes]:
    """Yield ``chunks``, read in order from ``f`` from ``start``, releasing them from the page
    cache behind the reader once a stretch is complete (large files only; else untouched)."""
    reader = releasing_reader(f, start)
    if reader is None:
        yield from chunks
        return
    for chunk in chunks:
        reader.advanced(len(chunk))
        yield chunk
    reader.flush()


class WriteBehind:
    """Sends a file being written sequentially to disk a stretch at a time, releasing each
    stretch once it is written; :meth:`finish` syncs the file. Files that stay smaller than
    ``LARGE_FILE`` are left alone (no sync, default caching)."""

    def __init__(self, fd: int, start: int = 0) -> None:
        self._fd = fd
        self._pos = start  # writing goes on from here (a resumed download: what was kept)
        self._started = start  # bytes before this have been handed to the disk
        self._released = start  # bytes from start to this are on disk and released

    def advanced(self, n: int) -> None:
        """Note ``n`` more bytes written (after the write call returned)."""
        self._pos += n
        if self._pos - self._started >= LARGE_FILE:
            if _SYNC_RANGE is not None:
                # Start writing the new stretch; wait for the one before (long done, usually)
                # and release it: a few stretches of memory whatever the file's size.
                _SYNC_RANGE(self._fd, self._started, self._pos - self._started, _WRITE)
                if self._started > self._released:
                    _SYNC_RANGE(self._fd, self._released, self._started - self._released,
                                _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                    release(self._fd, self._released, self._started - self._released)
                    self._released = self._started
            self._started = self._pos

    def finish(self) -> None:
        """Sync a large file (its bytes and size are on disk) and release what is left."""
        if self._pos < LARGE_FILE:
            return  # small: the caller's usual durability rules apply
        os.fsync(self._fd)
        release(self._fd, self._released, self._pos - self._released)
        self._released = self._started = self._pos
