"""Content-addressed blob storage over any fsspec filesystem.

A blob is named by the BLAKE3 digest of its bytes and stored once, at
``<root>/objects/<digest[:2]>/<digest[2:]>``. Writes stream through a hasher into a temporary
file under ``<root>/tmp/`` (the same filesystem) and are renamed into place, so a reader never
sees a half-written object; content that is already stored is discarded (deduplication). Reads
are verified against the digest as they stream.

Writing is three steps so that a caller can hold a lease in between (see ``docs/artifacts.md``):
:meth:`FsspecBlobStore.stage_stream` writes and hashes a temp file, :meth:`~FsspecBlobStore.publish`
renames it into place (or keeps it when the content is already stored), and
:meth:`~FsspecBlobStore.settle` makes sure the object exists before the temp file goes.
Garbage collection claims an object by renaming it into ``<root>/trash/`` and then either
restores or drops it.

On a local root everything the store creates is private to the user running modelyard, whatever
the umask: folders 0700 and files 0600, set by the mode given to ``mkdir``/``open`` (no extra
call). Folders that already exist keep their mode, except ``tmp/``, ``trash/`` and ``uploads/``
(:meth:`FsspecBlobStore.private_dir`). Other filesystems (``s3://``, ``memory://``) have no
POSIX modes and are left to their own access control.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from blake3 import blake3
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from modelyard.artifacts import page_cache
from modelyard.artifacts.hashing import (
    CHUNK_SIZE,
    BlobRef,
    hash_bytes,
    hash_file,
    iter_file_chunks,
    validate_digest,
)
from modelyard.artifacts.protocol import BlobStore, StagedBlob
from modelyard.artifacts.reaper import REAPER
from modelyard.errors import ArtifactNotFound, IntegrityFailure, InvalidArgument

__all__ = ["BlobRef", "BlobStore", "FsspecBlobStore", "StagedBlob", "hash_bytes", "hash_file"]

MAX_READ_CHUNK = 64 << 20
DIR_MODE = 0o700  # folders and files a local store creates (the umask can only narrow them)
FILE_MODE = 0o600
CLAIM_WAIT_S = 2.0  # how long a reader waits for a collection's verdict on a claimed blob
T = TypeVar("T")


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
        self._trash = posixpath.join(self._root, "trash")
        self._private_ready: set[str] = set()

    def __repr__(self) -> str:
        return f"FsspecBlobStore({self._fs.unstrip_protocol(self._root)!r})"

    # -- layout (shared with the upload area, which lives under the same root) -----------------

    @property
    def fs(self) -> Any:
        return self._fs

    @property
    def root(self) -> str:
        return self._root

    @property
    def is_local(self) -> bool:
        return self._local

    def _object_path(self, digest: str) -> str:
        digest = validate_digest(digest)
        return f"{self._objects}/{digest[:2]}/{digest[2:]}"

    def private_dir(self, path: str) -> None:
        """Create a folder under the root that only the server's user may enter (0700)."""
        if path in self._private_ready:
            return
        if self._local:
            # Temporary files are private: 0700, whatever the umask or a previous owner left.
            make_private_dirs(path)
            os.chmod(path, DIR_MODE)
        else:
            self._fs.makedirs(path, exist_ok=True)
        self._private_ready.add(path)

    def makedirs(self, path: str) -> None:
        """Create a folder under the root and any missing parents: 0700 on a local store
        (existing folders keep their mode)."""
        if self._local:
            make_private_dirs(path)
        else:
            self._fs.makedirs(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        """Rename within the store: atomic on a local filesystem."""
        if self._local:
            os.replace(src, dst)
        else:
            self._fs.mv(src, dst)

    def remove(self, path: str) -> int:
        """Remove one file; returns its size (0 if it was absent)."""
        try:
            size = int(self._fs.info(path)["size"])
            if self._local:
                os.remove(path)
            else:
                self._fs.rm_file(path)
        except FileNotFoundError:
            return 0
        return size

    def remove_soon(self, path: str) -> None:
        """Remove one file without waiting for its blocks to be freed (local store): it is
        renamed into ``tmp/`` now and unlinked by a background thread (:mod:`.reaper`); if
        the process dies first, the temp sweep of ``modelyard gc`` removes it. Elsewhere it
        is removed now."""
        if not self._local:
            self.remove(path)
            return
        doomed = self.new_temp_path()
        try:
            os.replace(path, doomed)
        except FileNotFoundError:
            return
        REAPER.unlink(doomed)

    # -- writing ------------------------------------------------------------------------------

    def new_temp_path(self) -> str:
        self.private_dir(self._tmp)
        return f"{self._tmp}/{secrets.token_hex(16)}.part"

    def _write_temp(self, tmp: str, chunks: Iterable[bytes]) -> BlobRef:
        hasher = blake3()
        size = 0
        if self._local:
            # 0600: the temp file becomes the object itself (linked or renamed into place).
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE
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

    def stage_stream(self, chunks: Iterable[bytes]) -> StagedBlob:
        tmp = self.new_temp_path()
        try:
            ref = self._write_temp(tmp, chunks)
        except BaseException:
            self.remove(tmp)
            raise
        return StagedBlob(ref, tmp)

    def adopt_local_file(self, path: str, ref: BlobRef) -> StagedBlob:
        """Stage a local file that the caller wrote under this store's root, hashed and made
        durable: it is hard-linked into ``tmp/`` (no copy), or moved where links fail."""
        if not self._local:
            raise InvalidArgument("only a local blob store adopts local files", field="path")
        tmp = self.new_temp_path()
        try:
            os.link(path, tmp)
        except FileNotFoundError:
            raise
        except OSError:
            os.replace(path, tmp)  # a filesystem without hard links: move it instead
        return StagedBlob(ref, tmp)

    def publish(self, staged: StagedBlob) -> None:
        final = self._object_path(staged.ref.digest)
        if self._local:
            make_private_dirs(posixpath.dirname(final))
            try:
                # A second name for the temp file, created only if the object is absent (the
                # temp name stays until settle(), so a collection that claims the object
                # meanwhile cannot leave the caller without its bytes).
                os.link(staged.temp, final)
            except FileExistsError:
                pass  # already stored (deduplication)
            except OSError:  # a filesystem without hard links: move it in place instead
                if not os.path.exists(final):
                    os.replace(staged.temp, final)
            return
        if self._fs.exists(final):
            return  # already stored: the temp object is kept until settle()
        self._fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self._fs.copy(staged.temp, final)  # kept until settle(), as above

    def settle(self, staged: StagedBlob) -> None:
        final = self._object_path(staged.ref.digest)
        if not self._fs.exists(final) and self._fs.exists(staged.temp):
            # A collection claimed the existing object between publish() and now.
            self.makedirs(posixpath.dirname(final))
            with contextlib.suppress(FileNotFoundError):
                self.rename(staged.temp, final)
        self.remove(staged.temp)

    def discard(self, staged: StagedBlob) -> None:
        self.remove(staged.temp)

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        staged = self.stage_stream(chunks)
        try:
            self.publish(staged)
        except BaseException:
            self.discard(staged)
            raise
        self.settle(staged)
        return staged.ref

    def put_file(self, path: Path) -> BlobRef:
        return self.put_stream(iter_file_chunks(Path(path)))

    # -- reading ------------------------------------------------------------------------------

    def _claimed(self, digest: str) -> bool:
        prefix = digest + "."
        return any(posixpath.basename(str(e["name"])).startswith(prefix)
                   for e in _ls(self._fs, self._trash))

    def _through_claims(self, digest: str, action: Callable[[], T]) -> T:
        """Run ``action``; if the object is missing because a garbage collection holds a claim
        on it (it is checking whether an upload took the blob meanwhile), wait for the
        verdict: the object comes back within milliseconds, or the claim is dropped."""
        deadline = time.monotonic() + CLAIM_WAIT_S
        looked_again = False
        while True:
            try:
                return action()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                if time.monotonic() > deadline:
                    raise _not_found(digest) from None
                if self._claimed(digest):
                    looked_again = False
                    time.sleep(0.005)
                elif looked_again:
                    raise _not_found(digest) from None
                else:
                    # No claim now, but a collection may have put the object back between
                    # the failed attempt and the look into the trash: one more attempt.
                    looked_again = True

    def _info_size(self, path: str, digest: str) -> int:
        def size() -> int:
            info = self._fs.info(path)
            if info.get("type") != "file":
                raise FileNotFoundError(path)
            return int(info["size"])

        return self._through_claims(digest, size)

    def _open_object(self, path: str, digest: str) -> Any:
        return self._through_claims(digest, lambda: self._fs.open(path, "rb"))

    def open(self, digest: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._object_path(digest)
        _check_chunk_size(chunk_size)
        # Opened now, so a missing blob fails at the call and not at the first chunk.
        return self._verified_chunks(self._open_object(path, digest), digest, chunk_size)

    def _verified_chunks(self, f: Any, digest: str, chunk_size: int) -> Iterator[bytes]:
        hasher = blake3()
        with f:
            for chunk in self._released(f, iter(lambda: f.read(chunk_size), b"")):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise IntegrityFailure(
                f"the stored blob {digest} does not match its digest (it was corrupted or "
                "tampered with)",
                field="digest",
            )

    def open_range(self, digest: str, start: int, length: int, *,
                   chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._object_path(digest)
        _check_chunk_size(chunk_size)
        f = self._open_object(path, digest)
        size = f.seek(0, os.SEEK_END)
        if start < 0 or length < 0 or start + length > size:
            f.close()
            raise InvalidArgument(f"range {start}+{length} lies outside the blob of {size} "
                                  "bytes", field="range")
        f.seek(start)
        return self._range_chunks(f, digest, length, chunk_size)

    def _range_chunks(self, f: Any, digest: str, length: int,
                      chunk_size: int) -> Iterator[bytes]:
        def reads() -> Iterator[bytes]:
            left = length
            while left > 0:
                chunk = f.read(min(chunk_size, left))
                if not chunk:
                    raise _not_found(digest)  # truncated under us
                left -= len(chunk)
                yield chunk

        with f:
            yield from self._released(f, reads(), f.tell())

    def _released(self, f: Any, chunks: Iterator[bytes], start: int = 0) -> Iterator[bytes]:
        """Large local blobs do not stay in the page cache once read (``page_cache``)."""
        return page_cache.released_behind(f, chunks, start) if self._local else chunks

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

    # -- garbage collection -------------------------------------------------------------------

    def claim(self, digest: str) -> str | None:
        final = self._object_path(digest)
        self.private_dir(self._trash)
        claim = f"{digest}.{secrets.token_hex(8)}"
        try:
            self.rename(final, f"{self._trash}/{claim}")
        except FileNotFoundError:
            return None
        return claim

    def _claim_path(self, claim: str) -> tuple[str, str]:
        digest, dot, token = claim.partition(".")
        if not dot or len(token) != 16 or not all(c in "0123456789abcdef" for c in token):
            raise InvalidArgument("not a claim name", field="claim")
        return f"{self._trash}/{validate_digest(digest)}.{token}", digest

    def restore(self, claim: str) -> None:
        path, digest = self._claim_path(claim)
        final = self._object_path(digest)
        self.makedirs(posixpath.dirname(final))
        # Should an upload have put the same content back meanwhile, this replaces it with
        # identical bytes: harmless.
        try:
            self.rename(path, final)
        except FileNotFoundError:
            return
        if self._local and os.path.lexists(path):
            # The upload put back the very file the claim holds (its temp name was a second
            # link to it): both names are one file, and rename(2) then does nothing. The object
            # is in place; the claim's name goes.
            os.remove(path)

    def drop(self, claim: str) -> int:
        path, _ = self._claim_path(claim)
        return self.remove(path)

    def iter_claims(self) -> Iterator[tuple[str, str]]:
        for entry in _ls(self._fs, self._trash):
            name = posixpath.basename(str(entry["name"]))
            try:
                _, digest = self._claim_path(name)
            except InvalidArgument:
                continue
            yield name, digest

    def sweep_temp(self, *, before: float, dry_run: bool) -> tuple[int, int]:
        files = freed = 0
        for entry in _ls(self._fs, self._tmp):
            if entry.get("type") != "file":
                continue
            mtime = modified_time(entry)
            if mtime is None or mtime >= before:
                continue
            files += 1
            freed += int(entry["size"]) if dry_run else self.remove(str(entry["name"]))
        return files, freed


def make_private_dirs(path: str) -> None:
    """Create the local folder ``path`` and every missing parent with mode 0700, whatever the
    umask (``os.makedirs`` gives the parents the default 0777 less the umask). Folders that
    exist keep their mode. One ``mkdir`` call when only the last folder is missing or none is.

    Raises:
        FileExistsError: ``path`` is a file.
    """
    try:
        os.mkdir(path, DIR_MODE)
        return
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not parent or parent == path:
            raise
    make_private_dirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:  # created concurrently
        if not os.path.isdir(path):
            raise


def local_root(url: str) -> str | None:
    """The folder a blob store URL names when it is on the local filesystem, else None (no
    remote filesystem is contacted, nor its driver imported)."""
    if get_protocol(url) not in LocalFileSystem.protocol:
        return None
    fs, root = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        return None
    return str(root).rstrip("/") or "/"


def modified_time(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch a listed object was last written, when the backend says."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        timestamp = getattr(value, "timestamp", None)
        if callable(timestamp):
            return float(timestamp())
    return None


def _ls(fs: Any, path: str) -> list[dict[str, Any]]:
    try:
        return list(fs.ls(path, detail=True))
    except FileNotFoundError:
        return []


def _check_chunk_size(chunk_size: int) -> None:
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or not 0 < chunk_size <= MAX_READ_CHUNK
    ):
        raise InvalidArgument(
            f"chunk_size must be an integer from 1 to {MAX_READ_CHUNK}", field="chunk_size"
        )


def _is_digest(text: str) -> bool:
    try:
        validate_digest(text)
    except InvalidArgument:
        return False
    return True


def _not_found(digest: str) -> ArtifactNotFound:
    return ArtifactNotFound(f"no blob with digest {digest} is stored", field="digest")
