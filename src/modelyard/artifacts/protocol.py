"""The blob store contract: content-addressed storage of immutable blobs.

Implemented by :class:`modelyard.artifacts.blobs.FsspecBlobStore` over any fsspec filesystem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from modelyard.artifacts.hashing import CHUNK_SIZE, BlobRef

__all__ = ["BlobStore", "StagedBlob"]


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """Content written and hashed into a temporary object, not yet (or not only) in place.

    ``temp`` is a path inside the store; it is an implementation detail of the store.
    """

    ref: BlobRef
    temp: str


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

    def stage_stream(self, chunks: Iterable[bytes]) -> StagedBlob:
        """Write ``chunks`` to a durable temporary object, hashing as it streams.

        Nothing is visible under ``objects/`` yet. Follow with :meth:`publish`, then
        :meth:`settle` (or :meth:`discard` to give up).

        Raises:
            Exception: whatever iterating ``chunks`` raises; the temp object is removed.
            OSError: the backend failed to write.
        """
        ...

    def publish(self, staged: StagedBlob) -> None:
        """Make the staged content visible under its digest (unless it already is).

        The temp object is kept either way (a local store adds a hard link, others copy), so
        that :meth:`settle` can put it in place should the object vanish (a garbage
        collection claimed it) before the caller's manifest row is committed.
        """
        ...

    def settle(self, staged: StagedBlob) -> None:
        """Finish a write: if the object is missing, move the kept temp object into place;
        then remove the temp object. Call it after the blob is referenced (or leased)."""
        ...

    def discard(self, staged: StagedBlob) -> None:
        """Remove the temp object of a write that is abandoned (absent is fine)."""
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

    def open_range(self, digest: str, start: int, length: int, *,
                   chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream ``length`` bytes of a blob from offset ``start``, without reading the rest.

        A part of a blob cannot be checked against the digest of the whole: the bytes are
        **not verified**. A client assembling a file from ranges verifies the whole digest.

        Raises:
            InvalidArgument: a malformed digest, or a range outside the blob.
            ArtifactNotFound: no blob has this digest (raised by this call).
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

    def claim(self, digest: str) -> str | None:
        """Take a blob out of ``objects/`` atomically (garbage collection's first step).

        Returns:
            A claim name to pass to :meth:`restore` or :meth:`drop`, or ``None`` if the blob
            was not there (someone else claimed or deleted it).
        """
        ...

    def restore(self, claim: str) -> None:
        """Put a claimed blob back under its digest (it is in use after all)."""
        ...

    def drop(self, claim: str) -> int:
        """Delete a claimed blob for good. Returns: the bytes freed (0 if it was gone)."""
        ...

    def iter_claims(self) -> Iterator[tuple[str, str]]:
        """(claim, digest) of every claimed blob, e.g. those a crashed collection left."""
        ...

    def sweep_temp(self, *, before: float, dry_run: bool) -> tuple[int, int]:
        """Remove temp objects last modified before ``before`` (seconds since the epoch).

        Returns:
            (files, bytes) removed, or that would be removed on a dry run.
        """
        ...
