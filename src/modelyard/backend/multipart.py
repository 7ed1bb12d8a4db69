"""Large files to a server in parts: parallel, resumable, verified end to end.

A session is opened (or found again through the local journal), the parts the server does not
hold yet go out over a few connections at once (``sendfile``, no copy through
Python), the file's BLAKE3 digest is computed on another thread meanwhile, and completion
makes the server check every byte against it. A client killed half-way and started again
finds its session in the journal and sends only the missing parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import blake3

from modelyard.backend.answers import raise_for
from modelyard.backend.transfer import PartConnection, Progress
from modelyard.domain.entities import ArtifactEntry
from modelyard.errors import NotFound, Unavailable
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

log = logging.getLogger("modelyard.transfer")

MIB = 1 << 20
DEFAULT_PART_SIZE = 16 * MIB  # the server's default too (artifacts.uploads)
MULTIPART_THRESHOLD = 32 * MIB  # files at least this big go in parts
PARALLEL_PARTS = 4
PART_ATTEMPTS = 5

# (route, path params, JSON body, timeout) -> decoded JSON answer; raises modelyard errors
JsonCall = Callable[[r.Route, dict[str, str], Any, float | None], Any]


@dataclass(frozen=True, slots=True)
class UploadReport:
    """What one call did: how many parts the server already held and how many were sent."""

    upload_id: str
    parts: int
    sent: int
    resumed: bool


class UploadJournal:
    """Upload ids of unfinished uploads, one small JSON file each, in a private folder.

    Keyed by server, run, artifact path and the local file's path, size and mtime, so a
    changed file never resumes an upload of its old content.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def key(server: str, run_id: str, path: str, src: Path, st: os.stat_result) -> str:
        return json.dumps([server, run_id, path, str(src.resolve()), st.st_size,
                           st.st_mtime_ns])

    def _file(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def load(self, key: str) -> str | None:
        try:
            data = json.loads(self._file(key).read_text())
        except (OSError, ValueError):
            return None
        upload_id = data.get("upload_id") if isinstance(data, dict) else None
        return upload_id if isinstance(upload_id, str) and data.get("key") == key else None

    def save(self, key: str, upload_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        target = self._file(key)
        tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "upload_id": upload_id, "saved": time.time()}, f)
        os.replace(tmp, target)

    def drop(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)


def _digest_of(src: Path) -> str:
    # Read, not mapped: a file truncated by its writer meanwhile would kill a mapping reader
    # with SIGBUS (the user's training process), where a read only sees fewer bytes.
    hasher = blake3.blake3()
    buf = bytearray(8 * MIB)
    view = memoryview(buf)
    with src.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


class MultipartUploader:
    """Uploads one file in parts through one server (thread-safe: one instance per backend)."""

    def __init__(self, base_url: str, call: JsonCall, *, journal: UploadJournal | None,
                 part_size: int = DEFAULT_PART_SIZE, parallel: int = PARALLEL_PARTS,
                 timeout: float | None = 300.0) -> None:
        self._base = base_url
        self._call = call
        self._journal = journal
        self.part_size = part_size
        self._parallel = max(1, parallel)
        self._timeout = timeout

    def _session(self, run_id: str, path: str, size: int, key: str | None) -> tuple[Any, bool]:
        upload_id = None if self._journal is None or key is None else self._journal.load(key)
        if upload_id is not None:
            try:
                state = self._call(r.GET_UPLOAD, {"run_id": run_id, "upload_id": upload_id},
                                   None, None)
                if state["path"] == path and state["size"] == size:
                    return state, True
            except NotFound:
                pass  # aborted, completed long ago or swept: start afresh
        state = self._call(r.CREATE_UPLOAD, {"run_id": run_id},
                           {"path": path, "size": size, "part_size": self.part_size}, None)
        if self._journal is not None and key is not None:
            self._journal.save(key, state["upload_id"])
        return state, False

    def upload(self, run_id: str, path: str, src: Path, *,
               on_progress: Progress | None = None) -> tuple[ArtifactEntry, UploadReport]:
        """Send ``src`` to artifact ``path`` of run ``run_id`` (both already validated).

        Raises:
            Unavailable: the server is unreachable or a part kept failing (the journal keeps
                the session: calling again resumes it).
            InvalidArgument: the server found the bytes do not match the file's digest.
        """
        st = src.stat()
        key = None if self._journal is None else UploadJournal.key(
            self._base, run_id, path, src, st)
        with ThreadPoolExecutor(1, thread_name_prefix="modelyard-digest") as hashing:
            digest = hashing.submit(_digest_of, src)
            state, resumed = self._session(run_id, path, st.st_size, key)
            if state["completed"]:  # done by an earlier process that died before the journal
                sent = 0
                entry = w.artifact_from_json(state["artifact"])
            else:
                sent = self._send_parts(run_id, src, state, on_progress)
                entry = w.artifact_from_json(self._call(
                    r.COMPLETE_UPLOAD, {"run_id": run_id, "upload_id": state["upload_id"]},
                    {"digest": digest.result()}, self._timeout))
        if self._journal is not None and key is not None:
            self._journal.drop(key)
        report = UploadReport(state["upload_id"], state["part_count"], sent, resumed)
        log.info("uploaded %s in %d parts: sent %d, %d already on the server%s", path,
                 report.parts, report.sent, report.parts - report.sent,
                 " (resumed)" if resumed else "")
        return entry, report

    def _send_parts(self, run_id: str, src: Path, state: Any,
                    on_progress: Progress | None) -> int:
        size, part_size, count = state["size"], state["part_size"], state["part_count"]
        have = set(state["parts"])
        missing = [n for n in range(1, count + 1) if n not in have]
        if on_progress is not None and have:
            on_progress(sum(min(part_size, size - (n - 1) * part_size) for n in have))
        local = threading.local()
        conns: list[PartConnection] = []
        lock = threading.Condition()
        stop = threading.Event()
        acked = [0]  # parts the server has acknowledged during this call

        def sent(n: int) -> None:
            if on_progress is not None:
                on_progress(n)

        def send(n: int) -> None:
            if stop.is_set():
                return
            conn = getattr(local, "conn", None)
            if conn is None:
                with lock:
                    # Two connections open at once (two server workers can take them), the
                    # k-th after k-1 parts are acknowledged. Staggered so, the connections
                    # finish their parts at different times and the server syncs one to disk
                    # while it receives the others; in step, all would wait for the disk.
                    k = len(conns)
                    conns.append(PartConnection(self._base, timeout=self._timeout))
                    conn = local.conn = conns[-1]
                    lock.wait_for(lambda: acked[0] >= k - 1 or stop.is_set(), timeout=10.0)
            offset = (n - 1) * part_size
            length = min(part_size, size - offset)
            with src.open("rb") as f:
                url = r.UPLOAD_PART.url(run_id=quote(run_id, safe=""),
                                        upload_id=quote(state["upload_id"], safe=""),
                                        part_number=str(n))
                self._send_one(conn, url, f, offset, length, n, sent)
            with lock:
                acked[0] += 1
                lock.notify_all()

        try:
            with ThreadPoolExecutor(min(self._parallel, max(1, len(missing))),
                                    thread_name_prefix="modelyard-part") as pool:
                futures: list[Future[None]] = [pool.submit(send, n) for n in missing]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    with lock:
                        stop.set()
                        lock.notify_all()  # wake the connections still waiting to open
                    for f in futures:
                        f.cancel()
                    exc = failed[0].exception()
                    raise exc if exc is not None else RuntimeError("unreachable")
        finally:
            for conn in conns:
                conn.close()
        return len(missing)

    def _send_one(self, conn: PartConnection, url: str, f: Any, offset: int, length: int,
                  n: int, sent: Progress) -> None:
        for attempt in range(1, PART_ATTEMPTS + 1):
            done = 0

            def count(k: int) -> None:
                nonlocal done
                done += k
                sent(k)

            try:
                answer = conn.put_region(url, f, offset, length, on_sent=count)
                # Unavailable covers a broken connection and a part still held by another
                # request (our own earlier one, broken off): both pass, so try again.
                raise_for(answer.status, answer.body)
                return
            except Unavailable as exc:
                if attempt == PART_ATTEMPTS:
                    raise
                sent(-done)  # those bytes go again
                log.info("part %d: retrying after %s", n, exc)
                time.sleep(min(0.25 * 2 ** attempt, 4.0))
