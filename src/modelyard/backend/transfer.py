"""Artifact bytes over HTTP with the standard library's ``http.client``.

The JSON API goes through httpx; the bulk data plane does not: ``http.client`` reads into a
reused buffer and writes in 1 MiB blocks with no per-chunk Python layers, which on loopback is
about three times httpx's streaming throughput; parts of a multipart upload leave the file with
``sendfile`` (no copy through Python at all). Memory stays constant in both directions.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import blake3

from modelyard.artifacts import page_cache
from modelyard.backend.files import FILE_MODE, write_verified
from modelyard.errors import IntegrityFailure, Unavailable

BLOCK = 1 << 20
MAX_ATTEMPTS = 100  # a download that keeps breaking off, each time further along

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # the JSON answer of an upload, or an error body
    digest: str | None = None
    size: int = 0


def _connect(base_url: str, timeout: float | None) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port, timeout=timeout, blocksize=BLOCK)
    return http.client.HTTPConnection(host, parts.port, timeout=timeout, blocksize=BLOCK)


def _prefix(base_url: str) -> str:
    return urlsplit(base_url).path.rstrip("/")


class _Reading:
    """A file that reports every block http.client reads from it."""

    def __init__(self, f: BinaryIO, on_progress: Progress) -> None:
        self._f = f
        self._on_progress = on_progress

    def read(self, n: int = -1) -> bytes:
        block = self._f.read(n)
        if block:
            self._on_progress(len(block))
        return block


def put_file(base_url: str, url_path: str, src: Path, *, timeout: float | None,
             on_progress: Progress | None = None) -> Answer:
    """PUT a local file as the request body, streamed from disk."""
    conn = _connect(base_url, timeout)
    try:
        with src.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            body = f if on_progress is None else _Reading(f, on_progress)
            conn.request(
                "PUT", _prefix(base_url) + url_path, body=body,
                headers={"Content-Length": str(size),
                         "Content-Type": "application/octet-stream"},
            )
        resp = conn.getresponse()
        return Answer(resp.status, resp.read())
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"cannot reach {base_url}: {exc}") from exc
    finally:
        conn.close()


class PartConnection:
    """A connection that PUTs regions of a file (a multipart upload's parts), kept alive
    between them unless the server closes it (it does after a part it took from the socket)."""

    def __init__(self, base_url: str, *, timeout: float | None) -> None:
        self._base = base_url
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def put_region(self, url_path: str, f: BinaryIO, offset: int, length: int, *,
                   on_sent: Progress | None = None) -> Answer:
        """PUT ``length`` bytes of ``f`` from ``offset`` (``on_sent`` hears every MiB).

        Raises:
            Unavailable: the connection failed or broke off (the part is not acknowledged).
        """
        if self._conn is None:
            self._conn = _connect(self._base, self._timeout)
        conn = self._conn
        try:
            conn.putrequest("PUT", _prefix(self._base) + url_path, skip_accept_encoding=True)
            conn.putheader("Content-Length", str(length))
            conn.putheader("Content-Type", "application/octet-stream")
            conn.endheaders()
            sock = conn.sock
            if sock is None:  # pragma: no cover - endheaders always connects
                raise http.client.HTTPException("not connected")
            sent = 0
            while sent < length:  # sendfile: the kernel moves the bytes, not Python
                n = sock.sendfile(f, offset + sent, min(BLOCK, length - sent))
                if not n:
                    raise http.client.HTTPException("the file ended before the part did")
                sent += n
                if on_sent is not None:
                    on_sent(n)
            resp = conn.getresponse()
            body = resp.read()
            if resp.will_close:
                self.close()
            return Answer(resp.status, body)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unavailable(f"the upload to {self._base} broke off: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def get_to_file(base_url: str, url_path: str, dest: Path, *, timeout: float | None) -> Answer:
    """GET into a temp file beside ``dest``; verify the served digest; rename into place.

    Raises:
        IntegrityFailure: the bytes do not match the digest the server named (dest untouched).
        Unavailable: the server could not be reached or the transfer broke off.
    """
    conn = _connect(base_url, timeout)
    try:
        conn.request("GET", _prefix(base_url) + url_path)
        resp = conn.getresponse()
        if resp.status != 200:
            return Answer(resp.status, resp.read())
        digest = resp.getheader("X-Modelyard-Digest")
        length = resp.getheader("Content-Length")
        size = write_verified(_blocks(resp), dest, digest=digest,
                              size=None if length is None else int(length))
        return Answer(200, b"", digest, size)
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"cannot reach {base_url}: {exc}") from exc
    finally:
        conn.close()


def partial_path(dest: Path, digest: str) -> Path:
    """Where an interrupted download of ``digest`` to ``dest`` is kept, to be resumed."""
    tag = hashlib.sha256(dest.name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return dest.parent / f".{tag}-{digest[:24]}.modelyard-partial"


def download_resumable(base_url: str, url_path: str, dest: Path, *, digest: str | None,
                       timeout: float | None, on_progress: Progress | None = None) -> Answer:
    """GET an artifact into ``dest``, resuming with HTTP Range after a broken transfer.

    The bytes go to a partial file beside ``dest`` named by the digest, kept when the transfer
    breaks off, so this call retries (while each attempt makes progress) and a later call,
    even in another process, continues where it stopped. ``If-Range`` carries the digest: if
    the artifact changed meanwhile the server sends it whole. The whole file is checked
    against the digest before it is renamed to ``dest``.

    Raises:
        IntegrityFailure: the assembled bytes do not match the digest (nothing is kept).
        Unavailable: the server could not be reached, or the transfer kept breaking off.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    stalled = 0
    for _ in range(MAX_ATTEMPTS):
        try:
            return _download_attempt(base_url, url_path, dest, digest, timeout, on_progress)
        except _Restart as again:
            digest = again.digest
        except _Broken as broken:
            digest = broken.digest or digest
            stalled = 0 if broken.progressed else stalled + 1
            if stalled >= 2:
                raise Unavailable(f"the download from {base_url} broke off: "
                                  f"{broken}") from broken.__cause__
            time.sleep(0.2 * stalled)
    raise Unavailable(f"the download from {base_url} kept breaking off")


class _Broken(Exception):
    """The body broke off; the partial file keeps what arrived."""

    def __init__(self, message: str, digest: str | None, *, progressed: bool) -> None:
        super().__init__(message)
        self.digest = digest
        self.progressed = progressed


class _Restart(Exception):
    """Start again with this digest (None: from the first byte, whatever is kept)."""

    def __init__(self, digest: str | None) -> None:
        super().__init__("restart")
        self.digest = digest


def _download_attempt(base_url: str, url_path: str, dest: Path, digest: str | None,
                      timeout: float | None, on_progress: Progress | None) -> Answer:
    partial = partial_path(dest, digest) if digest else None
    have = partial.stat().st_size if partial is not None and partial.exists() else 0
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{digest}"'} if have else {}
    conn = _connect(base_url, timeout)
    try:
        try:
            conn.request("GET", _prefix(base_url) + url_path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"cannot reach {base_url}: {exc}") from exc
        if resp.status == 416 and partial is not None:
            partial.unlink(missing_ok=True)  # longer than the content: start again
            raise _Restart(digest)
        if resp.status not in (200, 206):
            return Answer(resp.status, resp.read())
        served = resp.getheader("X-Modelyard-Digest") or None
        if resp.status == 206 and (served != digest or _range_start(resp) != have):
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise _Restart(None)
        if resp.status == 200:
            have, digest = 0, served  # the whole content, whatever was kept
            partial = None if digest is None else partial_path(dest, digest)
        total = _total_size(resp)
        if partial is None:  # no digest to name a partial file by: nothing to resume
            try:
                size = write_verified(_blocks(resp, on_progress), dest, digest=None,
                                      size=total)
            except (OSError, http.client.HTTPException) as exc:
                raise Unavailable(f"the download from {base_url} broke off: {exc}") from exc
            return Answer(200, b"", None, size)
        return _append(resp, partial, dest, digest or "", have, total, on_progress)
    finally:
        conn.close()


def _append(resp: http.client.HTTPResponse, partial: Path, dest: Path, digest: str, have: int,
            total: int | None, on_progress: Progress | None) -> Answer:
    hasher = blake3.blake3()
    received = 0
    # The partial file becomes dest by a rename: created as dest would be (0644 under umask
    # 022); never through a symlink planted under its predictable name.
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    with os.fdopen(fd, "r+b") as f:
        _hash_prefix(f, have, hasher)
        f.truncate(have)
        if have and on_progress is not None:
            on_progress(have)
        behind = page_cache.WriteBehind(fd, have)
        try:
            for block in _blocks(resp, on_progress):
                hasher.update(block)
                f.write(block)
                f.flush()
                received += len(block)
                behind.advanced(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _Broken(str(exc), digest, progressed=received > 0) from exc
        behind.finish()
    if total is not None and have + received != total:
        raise _Broken(f"got {have + received} of {total} bytes", digest,
                      progressed=received > 0)
    if hasher.hexdigest() != digest:
        partial.unlink(missing_ok=True)
        raise IntegrityFailure(
            f"downloaded bytes of {dest.name!r} do not match their digest (discarded)",
            field="digest")
    os.replace(partial, dest)
    return Answer(200, b"", digest, have + received)


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    ranged = (resp.getheader("Content-Range") or "").removeprefix("bytes ").split("-", 1)[0]
    return int(ranged) if ranged.isascii() and ranged.isdigit() else None


def _total_size(resp: http.client.HTTPResponse) -> int | None:
    ranged = resp.getheader("Content-Range")
    if resp.status == 206 and ranged and "/" in ranged:
        total = ranged.rsplit("/", 1)[1].strip()
        return int(total) if total.isascii() and total.isdigit() else None
    length = resp.getheader("Content-Length")
    return int(length) if length is not None and length.isascii() and length.isdigit() \
        else None


def _hash_prefix(f: BinaryIO, n: int, hasher: blake3.blake3) -> None:
    """Hash the first ``n`` bytes kept from an earlier attempt; leave the file at ``n``."""
    f.seek(0)
    left = n
    while left > 0:
        block = f.read(min(BLOCK, left))
        if not block:
            raise _Restart(None)  # the partial file shrank under us
        hasher.update(block)
        left -= len(block)


def _blocks(resp: http.client.HTTPResponse,
            on_progress: Progress | None = None) -> Iterator[memoryview]:
    """The body in blocks read into one buffer, never copied: each block is valid only until
    the next one is asked for (the consumers hash and write it at once)."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while n := resp.readinto(buf):
        if on_progress is not None:
            on_progress(n)
        yield view[:n]
