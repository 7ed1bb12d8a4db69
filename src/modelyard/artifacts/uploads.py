"""Resumable multipart uploads, kept in the blob store's own root (no server memory, no table).

Every replica of the server sees the same sessions because they live in the object store::

    <root>/uploads/<upload_id>/session.json   run, path, size, part size, declared digest, time
    <root>/uploads/<upload_id>/data           local store: the staging file; each part is
                                              written at its offset (no copy at completion)
    <root>/uploads/<upload_id>/parts/<n>      an acknowledged part: an empty marker (local) or
                                              the part's bytes (any other fsspec filesystem)
    <root>/uploads/<upload_id>/parts/<n>.lock local store: held (flock) while a request writes n
    <root>/uploads/<upload_id>/result.json    the artifact entry, once complete

On a local store every folder here is created 0700 and every file 0600, whatever the umask.
A part is acknowledged only after its bytes are durable (``fdatasync``). The upload id is 128
random bits in hex, checked by :func:`validate_upload_id` before it comes near a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from modelyard.artifacts.blobs import FILE_MODE, FsspecBlobStore, modified_time
from modelyard.artifacts.hashing import validate_digest
from modelyard.artifacts.protocol import StagedBlob
from modelyard.artifacts.upload_digest import PrefixHashers
from modelyard.artifacts.upload_parts import LocalPartWriter, ObjectPartWriter, PartWriter
from modelyard.artifacts.upload_session import (
    DEFAULT_PART_SIZE,
    HASH_BLOCK,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    UPLOAD_ID_RE,
    UploadSession,
    check_part_size,
    check_upload_size,
    describe_parts,
    new_upload_id,
    validate_upload_id,
)
from modelyard.errors import Conflict, NotFound

__all__ = [
    "DEFAULT_PART_SIZE", "MAX_PARTS", "MAX_PART_SIZE", "MIN_PART_SIZE", "PartWriter",
    "UploadArea", "UploadSession", "describe_parts", "validate_upload_id",
]


class UploadArea:
    """The multipart upload sessions of one blob store (same root, same filesystem)."""

    def __init__(self, blobs: FsspecBlobStore) -> None:
        self._blobs = blobs
        self.fs: Any = blobs.fs
        self._local = blobs.is_local
        self._dir = posixpath.join(blobs.root, "uploads")
        self._prefixes = PrefixHashers()  # local store: digests computed as parts arrive

    def session_dir(self, upload_id: str) -> str:
        return f"{self._dir}/{validate_upload_id(upload_id)}"

    def not_found(self, upload_id: str) -> NotFound:
        return NotFound(f"no upload {upload_id} is in progress (it never existed, was aborted, "
                        "or was swept after being left idle)", field="upload_id")

    # -- sessions -----------------------------------------------------------------------------

    def _write_json(self, path: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, sort_keys=True).encode()
        tmp = f"{path}.{secrets.token_hex(8)}.tmp"
        if self._local:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
        else:
            self.fs.pipe_file(tmp, body)
        self._blobs.rename(tmp, path)

    def _read_json(self, path: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, ValueError):  # absent, or torn by a crash mid-write
            return None
        return data if isinstance(data, dict) else None

    def create(self, *, run_id: str, path: str, size: int, part_size: int,
               digest: str | None, now_ms: int) -> UploadSession:
        """Open a session. ``run_id`` and ``path`` must be validated by the caller."""
        part_size = check_part_size(part_size)
        session = UploadSession(
            upload_id=new_upload_id(), run_id=run_id, path=path,
            size=check_upload_size(size, part_size), part_size=part_size,
            created_time=now_ms,
            digest=None if digest is None else validate_digest(digest),
        )
        self._blobs.private_dir(self._dir)
        base = self.session_dir(session.upload_id)
        self._blobs.makedirs(f"{base}/parts")  # local store: 0700, like every folder here
        if self._local:
            fd = os.open(f"{base}/data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.ftruncate(fd, session.size)  # sparse: parts fill it at their offsets
            finally:
                os.close(fd)
        self._write_json(f"{base}/session.json", asdict(session))
        return session

    def get(self, upload_id: str) -> UploadSession:
        data = self._read_json(f"{self.session_dir(upload_id)}/session.json")
        if data is None:
            raise self.not_found(upload_id)
        return UploadSession(**data)

    def acknowledged(self, session: UploadSession) -> list[int]:
        names = (posixpath.basename(str(e["name"]))
                 for e in _ls(self.fs, f"{self.session_dir(session.upload_id)}/parts"))
        return sorted(int(n) for n in names
                      if n.isascii() and n.isdigit() and 1 <= int(n) <= session.part_count)

    def result(self, session: UploadSession) -> dict[str, Any] | None:
        return self._read_json(f"{self.session_dir(session.upload_id)}/result.json")

    def open_part(self, session: UploadSession, number: int) -> PartWriter:
        number = session.check_part(number)
        if self.result(session) is not None:
            raise Conflict(f"upload {session.upload_id} is already complete",
                           field="upload_id")
        base = self.session_dir(session.upload_id)
        if self._local:
            hasher = self._prefixes.get(base, session)
            return LocalPartWriter(base, session, number, self.not_found(session.upload_id),
                                   on_ack=hasher.extend)
        return ObjectPartWriter(self.fs, base, session, number)

    # -- completion ---------------------------------------------------------------------------

    def missing_parts(self, session: UploadSession) -> list[int]:
        have = set(self.acknowledged(session))
        return [n for n in range(1, session.part_count + 1) if n not in have]

    def stage(self, session: UploadSession) -> StagedBlob:
        """Hash the complete upload and stage it in the blob store (nothing visible yet).

        Raises:
            Conflict: some parts have not been acknowledged (the message lists them).
        """
        missing = self.missing_parts(session)
        if missing:
            raise Conflict(
                f"upload {session.upload_id} is missing part{'s' if len(missing) > 1 else ''} "
                f"{describe_parts(missing)} of {session.part_count}", field="parts")
        base = self.session_dir(session.upload_id)
        if not self._local:
            return self._blobs.stage_stream(self._iter_parts(session))
        data = f"{base}/data"
        try:  # absent: completed (or aborted) by a concurrent request
            _sync(data)  # a no-op when every part was synced
            ref = self._prefixes.get(base, session).finish()
            if ref.size != session.size:
                raise Conflict(f"upload {session.upload_id} holds {ref.size} bytes, not "
                               f"{session.size}", field="size")
            return self._blobs.adopt_local_file(data, ref)
        except FileNotFoundError:
            raise self.not_found(session.upload_id) from None

    def _iter_parts(self, session: UploadSession) -> Iterator[bytes]:
        base = self.session_dir(session.upload_id)
        for n in range(1, session.part_count + 1):
            with self.fs.open(f"{base}/parts/{n}", "rb") as f:
                while chunk := f.read(HASH_BLOCK):
                    yield chunk

    def finish(self, session: UploadSession, result: dict[str, Any]) -> None:
        """Record the outcome (a retried completion returns it) and free the staged bytes."""
        base = self.session_dir(session.upload_id)
        self._write_json(f"{base}/result.json", result)
        self._prefixes.forget(session.upload_id)
        if self._local:
            # In the background: when the content was already stored (deduplication), this
            # is the last name of the staging file and freeing it would delay the answer.
            self._blobs.remove_soon(f"{base}/data")
            shutil.rmtree(f"{base}/parts", ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(f"{base}/parts", recursive=True)

    def abort(self, upload_id: str) -> int:
        """Remove a session and everything it staged. Returns: bytes freed.

        Raises:
            NotFound: no such session.
        """
        base = self.session_dir(upload_id)
        if not self.fs.exists(f"{base}/session.json"):
            raise self.not_found(upload_id)
        self._prefixes.forget(upload_id)
        return self._remove_tree(base)

    def _remove_tree(self, base: str) -> int:
        freed = sum(_usage(e, local=self._local) for e in self._files(base))
        if self._local:
            shutil.rmtree(base, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(base, recursive=True)
        return freed

    def _files(self, base: str) -> list[dict[str, Any]]:
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        return [e for e in found.values() if e.get("type") == "file"]

    # -- garbage collection -------------------------------------------------------------------

    def sweep(self, *, before: float, dry_run: bool) -> tuple[int, int]:
        """Remove sessions (open or complete) idle since before ``before`` (epoch seconds).

        Returns:
            (sessions, bytes) removed, or that would be on a dry run.
        """
        sessions = freed = 0
        for entry in _ls(self.fs, self._dir):
            name = posixpath.basename(str(entry["name"]).rstrip("/"))
            if entry.get("type") != "directory" or UPLOAD_ID_RE.fullmatch(name) is None:
                continue
            base = f"{self._dir}/{name}"
            files = self._files(base)
            times = [t for t in (modified_time(e) for e in files) if t is not None]
            if not times or max(times) >= before:
                continue
            sessions += 1
            if dry_run:
                freed += sum(_usage(e, local=self._local) for e in files)
            else:
                freed += self._remove_tree(base)
        return sessions, freed


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _usage(info: dict[str, Any], *, local: bool) -> int:
    """Bytes a file occupies: allocated blocks on a local disk (staging files are sparse)."""
    if local:
        with contextlib.suppress(OSError):
            st = os.stat(str(info["name"]))
            blocks = getattr(st, "st_blocks", None)
            return st.st_size if blocks is None else min(st.st_size, blocks * 512)
    return int(info.get("size") or 0)


def _ls(fs: Any, path: str) -> list[dict[str, Any]]:
    try:
        return list(fs.ls(path, detail=True))
    except FileNotFoundError:
        return []
