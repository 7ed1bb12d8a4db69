"""Content-addressed blob storage over any fsspec filesystem.

A blob is named by the BLAKE3 digest of its bytes and stored once, at
``<root>/objects/<digest[:2]>/<digest[2:]>``. Writes stream through a hasher into a temporary
file under ``<root>/tmp/`` (the same filesystem) and are renamed into place, so a reader never
sees a half-written object; content that is already stored is discarded (deduplication). Reads
are verified against the digest as they stream.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from blake3 import blake3
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from modelyard.artifacts.hashing import (
    CHUNK_SIZE,
    BlobRef,
    hash_bytes,
    hash_file,
    iter_file_chunks,
    validate_digest,
)
from modelyard.errors import ArtifactNotFound, IntegrityFailure, InvalidArgument

__all__ = ["BlobRef", "BlobStore", "FsspecBlobStore", "hash_bytes", "hash_file"]

MAX_READ_CHUNK = 64 << 20


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed storage of immutable byte blobs, named by their BLAKE3 digest."""

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store the concatenation of ``chunks``, hashing as it streams (constant memory).

        Args:
            chunks: the content, in pieces of any size.

        Returns:
            The digest and size of the content. Storing content that is already present
            returns the same reference and keeps a single copy.

        Raises:
            Exception: whatever iterating ``chunks`` raises; nothing is stored then.
            OSError: the backend failed to write.
        """
        ...

    def put_file(self, path: Path) -> BlobRef:
        """Store the content of a local file, streaming it (a file of any size is fine).

        Args:
            path: a local regular file.

        Returns:
            The digest and size of the content.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            OSError: ``path`` cannot be read or the backend failed to write.
        """
        ...

    def open(self, digest: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream a blob's content, verifying it against ``digest`` as it goes.

        The digest is checked when the last chunk has been read: until the iterator is
        exhausted without error, treat the bytes received as unverified (write them to a
        temporary file and move it into place only on success).

        Args:
            digest: the blob's 64-character lowercase hex digest.
            chunk_size: the largest chunk yielded, in bytes (1 to 64 MiB).

        Returns:
            An iterator of chunks of the content.

        Raises:
            InvalidArgument: ``digest`` is malformed or ``chunk_size`` is out of range
                (raised by this call, before iterating).
            ArtifactNotFound: no blob has this digest (raised by this call, before iterating;
                also while iterating if the blob is deleted meanwhile).
            IntegrityFailure: the stored bytes do not match ``digest`` (raised by the
                iterator after the last chunk).
        """
        ...

    def read_bytes(self, digest: str) -> bytes:
        """Return a small blob's whole content, verified against ``digest``.

        Args:
            digest: the blob's 64-character lowercase hex digest.

        Returns:
            The content; it is held in memory, so use :meth:`open` for large blobs.

        Raises:
            InvalidArgument: ``digest`` is malformed.
            ArtifactNotFound: no blob has this digest.
            IntegrityFailure: the stored bytes do not match ``digest``.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Tell whether a blob with this digest is stored.

        Args:
            digest: a 64-character lowercase hex digest.

        Returns:
            ``True`` if it is stored (its content is not verified here).

        Raises:
            InvalidArgument: ``digest`` is malformed.
        """
        ...

    def size(self, digest: str) -> int:
        """Return the stored size of a blob in bytes.

        Args:
            digest: the blob's 64-character lowercase hex digest.

        Returns:
            The size of the stored object.

        Raises:
            InvalidArgument: ``digest`` is malformed.
            ArtifactNotFound: no blob has this digest.
        """
        ...

    def delete(self, digest: str) -> int:
        """Delete a blob; deleting an absent one is not an error.

        Args:
            digest: the blob's 64-character lowercase hex digest.

        Returns:
            The number of bytes freed: 0 if the blob was absent.

        Raises:
            InvalidArgument: ``digest`` is malformed.
        """
        ...

    def iter_digests(self) -> Iterator[BlobRef]:
        """List the stored blobs, sorted by digest.

        Returns:
            An iterator of the references (digest and stored size) of every blob. Files in the
            object folder whose names do not form a digest are not blobs and are not listed.

        Raises:
            OSError: the backend failed to list.
        """
        ...


class FsspecBlobStore:
    """A :class:`BlobStore` on a local folder or any fsspec URL.

    Args:
        url: a local path or an fsspec URL (``file:///srv/blobs``, ``memory://blobs``,
            ``s3://bucket/blobs``, ...). It comes from the operator's configuration, never
            from a user. Nothing is created until the first write.
    """

    def __init__(self, url: str) -> None:
        fs, root = url_to_fs(url)
        self._fs: Any = fs
        self._local = isinstance(fs, LocalFileSystem)
        self._root = str(root).rstrip("/") or "/"
        self._objects = posixpath.join(self._root, "objects")
        self._tmp = posixpath.join(self._root, "tmp")
        self._tmp_ready = False

    def __repr__(self) -> str:
        return f"FsspecBlobStore({self._fs.unstrip_protocol(self._root)!r})"

    # -- layout -------------------------------------------------------------------------------

    def _object_path(self, digest: str) -> str:
        digest = validate_digest(digest)
        return f"{self._objects}/{digest[:2]}/{digest[2:]}"

    def _ensure_tmp(self) -> None:
        if self._tmp_ready:
            return
        if self._local:
            # Temporary files are private: 0700, whatever the umask or a previous owner left.
            os.makedirs(self._tmp, mode=0o700, exist_ok=True)
            os.chmod(self._tmp, 0o700)
        else:
            self._fs.makedirs(self._tmp, exist_ok=True)
        self._tmp_ready = True

    # -- writing ------------------------------------------------------------------------------

    def _write_temp(self, tmp: str, chunks: Iterable[bytes]) -> BlobRef:
        hasher = blake3()
        size = 0
        if self._local:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644
            )
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                # Durable before the rename: a crash must not leave a truncated object under a
                # digest that deduplication would then trust forever.
                os.fsync(f.fileno())
        else:
            with self._fs.open(tmp, "wb") as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
        return BlobRef(digest=hasher.hexdigest(), size=size)

    def _discard(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._local:
                os.remove(path)
            else:
                self._fs.rm_file(path)

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        self._ensure_tmp()
        tmp = f"{self._tmp}/{secrets.token_hex(16)}.part"
        try:
            ref = self._write_temp(tmp, chunks)
            final = self._object_path(ref.digest)
            if self._fs.exists(final):
                self._discard(tmp)  # already stored: identical content is kept once
                return ref
            self._fs.makedirs(posixpath.dirname(final), exist_ok=True)
            if self._local:
                os.replace(tmp, final)  # atomic on the same filesystem
            else:
                self._fs.mv(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return ref

    def put_file(self, path: Path) -> BlobRef:
        return self.put_stream(iter_file_chunks(Path(path)))

    # -- reading ------------------------------------------------------------------------------

    def _info_size(self, path: str, digest: str) -> int:
        try:
            info = self._fs.info(path)
        except FileNotFoundError:
            raise _not_found(digest) from None
        if info.get("type") != "file":
            raise _not_found(digest)
        return int(info["size"])

    def open(self, digest: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._object_path(digest)
        if (
            not isinstance(chunk_size, int)
            or isinstance(chunk_size, bool)
            or not 0 < chunk_size <= MAX_READ_CHUNK
        ):
            raise InvalidArgument(
                f"chunk_size must be an integer from 1 to {MAX_READ_CHUNK}", field="chunk_size"
            )
        # Checked now, so a missing blob fails at the call and not at the first chunk.
        self._info_size(path, digest)
        return self._verified_chunks(path, digest, chunk_size)

    def _verified_chunks(self, path: str, digest: str, chunk_size: int) -> Iterator[bytes]:
        hasher = blake3()
        try:
            f = self._fs.open(path, "rb")
        except FileNotFoundError:
            raise _not_found(digest) from None
        with f:
            while chunk := f.read(chunk_size):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise IntegrityFailure(
                f"the stored blob {digest} does not match its digest (it was corrupted or "
                "tampered with)",
                field="digest",
            )

    def read_bytes(self, digest: str) -> bytes:
        return b"".join(self.open(digest))

    def exists(self, digest: str) -> bool:
        return bool(self._fs.isfile(self._object_path(digest)))

    def size(self, digest: str) -> int:
        return self._info_size(self._object_path(digest), digest)

    def delete(self, digest: str) -> int:
        path = self._object_path(digest)
        try:
            freed = self._info_size(path, digest)
        except ArtifactNotFound:
            return 0
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            return 0  # deleted concurrently: the bytes were not ours to count
        return freed

    def iter_digests(self) -> Iterator[BlobRef]:
        try:
            fanout = self._fs.ls(self._objects, detail=True)
        except FileNotFoundError:
            return
        for entry in sorted(fanout, key=lambda e: str(e["name"])):
            prefix = posixpath.basename(str(entry["name"]).rstrip("/"))
            if entry.get("type") != "directory" or len(prefix) != 2:
                continue
            try:
                objects = self._fs.ls(entry["name"], detail=True)
            except FileNotFoundError:
                continue
            for obj in sorted(objects, key=lambda e: str(e["name"])):
                digest = prefix + posixpath.basename(str(obj["name"]))
                if obj.get("type") == "file" and _is_digest(digest):
                    yield BlobRef(digest=digest, size=int(obj["size"]))


def _is_digest(text: str) -> bool:
    try:
        validate_digest(text)
    except InvalidArgument:
        return False
    return True


def _not_found(digest: str) -> ArtifactNotFound:
    return ArtifactNotFound(f"no blob with digest {digest} is stored", field="digest")
