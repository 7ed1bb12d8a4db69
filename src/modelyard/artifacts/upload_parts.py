"""Receiving one part of a multipart upload: written once, compared when sent again."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from modelyard.artifacts.upload_session import UploadSession
from modelyard.errors import Conflict, InvalidArgument, NotFound, RequestTimeout, Unavailable

try:  # POSIX; elsewhere two requests for one part are not kept apart (last write wins)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_SPLICE = getattr(os, "splice", None) if fcntl is not None else None  # Linux
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
SPLICE_STEP = 1 << 20


class PartWriter(ABC):
    """Receives the bytes of one part; :meth:`commit` acknowledges it, :meth:`close` always.

    A part that was acknowledged before is not written again: the bytes are compared with
    what is stored, and different bytes are refused (nothing stored changes).
    """

    def __init__(self, session: UploadSession, number: int) -> None:
        self.session = session
        self.number = number
        self.offset, self.length = session.part_span(number)
        self.received = 0
        self.already = False
        self._differs = False

    def write(self, chunks: list[bytes]) -> None:
        total = sum(len(c) for c in chunks)
        if self.received + total > self.length:
            raise InvalidArgument(
                f"part {self.number} is {self.length} bytes; more arrived", field="body")
        if self.already:
            if not self._differs and self._read(self.received, total) != b"".join(chunks):
                self._differs = True
        else:
            self._write(chunks)
        self.received += total

    #: Whether :meth:`receive_from` can take the rest of the body from a socket directly.
    takes_descriptors = False

    def receive_from(self, sock: int, deadline: Callable[[int], float]) -> None:
        """Receive the rest of the part from the readable non-blocking socket ``sock``.

        Args:
            deadline: given the bytes of the part received so far, the ``time.monotonic()``
                by which more must have arrived (the server's minimum body rate).

        Raises:
            InvalidArgument: the sender stopped.
            RequestTimeout: the bytes arrived slower than ``deadline`` allows.
        """
        raise NotImplementedError

    def commit(self) -> bool:
        """Acknowledge the part. Returns: False if it had been acknowledged before.

        Raises:
            InvalidArgument: fewer bytes than the part's length arrived.
            Conflict: the part was acknowledged before with different bytes.
        """
        if self.received != self.length:
            raise InvalidArgument(
                f"part {self.number} is {self.length} bytes; only {self.received} arrived",
                field="body")
        if self.already:
            if self._differs:
                raise Conflict(
                    f"part {self.number} of upload {self.session.upload_id} was already "
                    "received with different bytes; it is kept as it was", field="part_number")
            return False
        self._commit()
        return True

    @abstractmethod
    def close(self) -> None:
        """Release the part (always call it, committed or not)."""

    @abstractmethod
    def _read(self, at: int, n: int) -> bytes: ...

    @abstractmethod
    def _write(self, chunks: list[bytes]) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...


class LocalPartWriter(PartWriter):
    """A local disk: the part goes straight into the staging file at its offset (pwrite),
    under an flock so two requests never write one part at once."""

    def __init__(self, base: str, session: UploadSession, number: int,
                 not_found: NotFound, on_ack: Callable[[], None]) -> None:
        super().__init__(session, number)
        self._on_ack = on_ack
        self._marker = f"{base}/parts/{number}"
        self._lock_fd = -1
        self._fd = -1
        try:
            self._lock_fd = os.open(f"{self._marker}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            if fcntl is not None:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    # Usually the client's own earlier attempt, broken off: safe to retry.
                    raise Unavailable(
                        f"part {number} of upload {session.upload_id} is being received by "
                        "another request; retry when it ends", field="part_number") from None
            self.already = os.path.exists(self._marker)
            self._fd = os.open(f"{base}/data", os.O_RDWR)
        except FileNotFoundError:
            self.close()
            raise not_found from None
        except BaseException:
            self.close()
            raise

    def _read(self, at: int, n: int) -> bytes:
        return os.pread(self._fd, n, self.offset + at)

    def _write(self, chunks: list[bytes]) -> None:
        at = self.offset + self.received
        if len(chunks) > 256 or not hasattr(os, "pwritev"):
            chunks = [b"".join(chunks)]
        done = os.pwritev(self._fd, chunks, at) if hasattr(os, "pwritev") \
            else os.pwrite(self._fd, chunks[0], at)
        total = sum(len(c) for c in chunks)
        if done < total:  # a short write: finish it piece by piece
            rest = memoryview(b"".join(chunks))[done:]
            while rest:
                n = os.pwrite(self._fd, rest, at + done)
                rest, done = rest[n:], done + n

    takes_descriptors = _SPLICE is not None

    def receive_from(self, sock: int, deadline: Callable[[int], float]) -> None:
        """Move the rest of the part from ``sock`` into the staging file with ``splice(2)``:
        socket to pipe to file inside the kernel, never through Python's memory."""
        if _SPLICE is None or self.already:  # pragma: no cover - checked by the caller
            raise NotImplementedError
        left = self.length - self.received
        at = self.offset + self.received
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a larger pipe: fewer calls (Linux only)
                fcntl.fcntl(w, _F_SETPIPE_SZ, SPLICE_STEP)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            while left:
                try:
                    n = _SPLICE(sock, w, min(left, SPLICE_STEP),
                                flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    wait = deadline(self.received) - time.monotonic()
                    if wait <= 0 or not poller.poll(max(1, int(wait * 1000))):
                        raise RequestTimeout(
                            f"part {self.number} arrived too slowly: {self.received} of "
                            f"{self.length} bytes when the server's minimum rate wanted more",
                            field="body") from None
                    continue
                if n == 0:
                    raise self._stopped("the connection ended")
                while n:
                    moved = _SPLICE(r, self._fd, n, offset_dst=at)
                    at += moved
                    n -= moved
                    left -= moved
                    self.received += moved
        finally:
            os.close(r)
            os.close(w)

    def _stopped(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"part {self.number} stopped after {self.received} of "
                               f"{self.length} bytes: {why}", field="body")

    def _commit(self) -> None:
        os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        try:  # the acknowledgement; only after the bytes are durable
            os.close(os.open(self._marker, os.O_CREAT | os.O_WRONLY, 0o600))
        except FileNotFoundError:
            raise NotFound(f"upload {self.session.upload_id} was aborted meanwhile",
                           field="upload_id") from None
        self._on_ack()  # e.g. extend the digest of the acknowledged prefix

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):  # closing the lock file releases the flock
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1


class ObjectPartWriter(PartWriter):
    """Any other fsspec filesystem: each part is its own object, written then renamed."""

    def __init__(self, fs: Any, base: str, session: UploadSession, number: int) -> None:
        super().__init__(session, number)
        self._fs = fs
        self._final = f"{base}/parts/{number}"
        self.already = bool(self._fs.exists(self._final))
        self._tmp = f"{self._final}.{secrets.token_hex(8)}.tmp"
        self._f: Any = self._fs.open(self._final if self.already else self._tmp,
                                     "rb" if self.already else "wb")

    def _read(self, at: int, n: int) -> bytes:
        return bytes(self._f.read(n))

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._f.write(chunk)

    def _commit(self) -> None:
        self._f.close()
        self._fs.mv(self._tmp, self._final)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()
        if not self.already:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._tmp)
