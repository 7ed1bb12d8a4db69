"""The digest of a local multipart upload, computed while its parts arrive.

Completing an upload needs the BLAKE3 of all its bytes, in order, while parts arrive in any
order over several connections. Each server process therefore keeps, for the uploads it
receives parts of, a hasher over the upload's *acknowledged prefix*: when a part is
acknowledged, the hasher reads on through every acknowledged part that follows what it has
covered (from the page cache: the part was just written), and lets the kernel drop those
pages. Completion then only hashes what is left, usually nothing, instead of reading the whole
file back.

This is a cache, not state: a part acknowledged by another replica is read from the shared
staging file like any other, and completion on a process that holds no hasher (another
replica, a restart) hashes the whole file. Acknowledged parts never change (a part sent again
is compared, not rewritten), so what a hasher covered stays true.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections import OrderedDict

from blake3 import blake3

from modelyard.artifacts import page_cache
from modelyard.artifacts.hashing import BlobRef
from modelyard.artifacts.upload_session import HASH_BLOCK, UploadSession

log = logging.getLogger("modelyard.uploads")

MAX_TRACKED = 64
"""Uploads a process keeps a hasher for; the least recently extended one goes first."""


class PrefixHasher:
    """BLAKE3 of the acknowledged prefix of one local upload (``base`` is its folder)."""

    def __init__(self, base: str, session: UploadSession) -> None:
        self._data = f"{base}/data"
        self._parts = f"{base}/parts"
        self._session = session
        self._hasher = blake3(max_threads=blake3.AUTO)
        self.covered = 0  # bytes hashed, always a whole number of parts
        self._busy = threading.Lock()
        self._wanted = False

    def extend(self) -> None:
        """Hash on through the acknowledged parts, unless another thread already is (it then
        also covers whatever was acknowledged meanwhile). Never raises: the part it is called
        for is acknowledged already, and completion starts afresh if this went wrong."""
        self._wanted = True
        while self._wanted and self._busy.acquire(blocking=False):
            try:
                self._wanted = False
                self._advance()
            except Exception as exc:  # only a cache; e.g. the upload was aborted meanwhile
                log.debug("upload %s: digest of the prefix dropped: %r",
                          self._session.upload_id, exc)
                self._restart()
                return
            finally:
                self._busy.release()

    def _restart(self) -> None:
        """Forget what was hashed (a failure may have left the hasher part-way through)."""
        self._hasher = blake3(max_threads=blake3.AUTO)
        self.covered = 0

    def finish(self) -> BlobRef:
        """The digest of the whole upload, hashing what is not covered yet.

        Raises:
            FileNotFoundError: the staging file is gone (completed or aborted meanwhile).
        """
        with self._busy:
            try:
                self._advance(to_end=True)
            except BaseException:
                self._restart()
                raise
            return BlobRef(self._hasher.hexdigest(), self.covered)

    def _advance(self, *, to_end: bool = False) -> None:
        s = self._session
        if self.covered >= s.size:
            return
        fd = os.open(self._data, os.O_RDONLY)
        try:
            # An anonymous mapping as the buffer: returned to the kernel when done, where a
            # large heap block would stay with the arena of whichever worker thread ran this.
            # (The file itself is read, not mapped: a mapping of a file that shrank under it
            # would kill the server with SIGBUS.)
            with mmap.mmap(-1, HASH_BLOCK) as buf:
                view = memoryview(buf)
                try:
                    while self.covered < s.size:
                        number = self.covered // s.part_size + 1
                        if not to_end and not os.path.exists(f"{self._parts}/{number}"):
                            return
                        offset, length = s.part_span(number)
                        self._hash_range(fd, view, offset, length)
                        self.covered = offset + length
                finally:
                    view.release()
        finally:
            os.close(fd)

    def _hash_range(self, fd: int, view: memoryview, offset: int, length: int) -> None:
        """Hash bytes of the staging file (from the page cache: the part was just written),
        then release them."""
        at, end = offset, offset + length
        while at < end:
            n = os.preadv(fd, [view[:min(len(view), end - at)]], at)
            if n <= 0:
                raise FileNotFoundError(self._data)  # shorter: not the upload we know
            self._hasher.update(view[:n])
            at += n
        page_cache.release(fd, offset, length)


class PrefixHashers:
    """The hashers of one process, one per upload it has received parts of (bounded)."""

    def __init__(self, limit: int = MAX_TRACKED) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, PrefixHasher] = OrderedDict()

    def get(self, base: str, session: UploadSession) -> PrefixHasher:
        with self._lock:
            hasher = self._by_id.get(session.upload_id)
            if hasher is None:
                hasher = self._by_id[session.upload_id] = PrefixHasher(base, session)
                while len(self._by_id) > self._limit:
                    self._by_id.popitem(last=False)
            else:
                self._by_id.move_to_end(session.upload_id)
            return hasher

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._by_id.pop(upload_id, None)

    def __len__(self) -> int:
        return len(self._by_id)
