"""An active run: the object ``start_run`` returns. Logging calls enqueue and return at once."""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from modelyard.artifacts.hashing import hash_bytes
from modelyard.artifacts.paths import iter_local_tree, normalize_artifact_path
from modelyard.backend.parallel import run_parallel
from modelyard.backend.protocol import Backend
from modelyard.client.sender import BatchSender
from modelyard.domain import validation as v
from modelyard.domain.entities import (
    ArtifactEntry,
    Metric,
    NewRun,
    Param,
    Run,
    RunEnd,
    RunStatus,
    Tag,
)
from modelyard.errors import InvalidArgument, ModelyardError, ParamOverwrite
from modelyard.tracking.source import RecentCaptures, SourceCapture

log = logging.getLogger("modelyard.client")

# Per process: a sweep's runs share one capture of the code it loaded (tracking.source), and
# the digests of the capture files each backend already stores (their uploads are skipped).
CAPTURES = RecentCaptures()
_HELD_DIGESTS: weakref.WeakKeyDictionary[Backend, set[str]] = weakref.WeakKeyDictionary()


def _held(backend: Backend) -> set[str]:
    return _HELD_DIGESTS.setdefault(backend, set())


@functools.lru_cache(maxsize=8)
def _files(capture: SourceCapture) -> tuple[tuple[str, bytes, str], ...]:
    """A capture's files with their digests, built and hashed once per capture (a sweep's
    runs share one)."""
    return tuple((path, data, hash_bytes(data)) for path, data in capture.artifacts().items())


class RunTerminated(SystemExit):
    """Raised in the main thread on SIGTERM so the ``with`` block ends the run KILLED."""


def _now() -> int:
    return int(time.time() * 1000)


def _join(path: str | None, name: str) -> str:
    # Only trailing slashes go: a leading one makes the path absolute, which normalisation refuses
    # (stripping it would quietly store "/etc/passwd" as "etc/passwd/...").
    return f"{path.rstrip('/')}/{name}" if path and path.strip("/") else name


class ActiveRun:
    """A run being logged to. Use it as a context manager, or call :meth:`end`."""

    def __init__(self, backend: Backend, run: Run, *, create: NewRun | None = None,
                 on_end: Any = None,
                 on_create_refused: Callable[[ModelyardError], None] | None = None) -> None:
        """Args:
            create: the run's creation, when the backend has not seen the run yet: it travels
                with the first batch (``flush()``, an artifact upload or the end send it).
            on_end: called with this run once it has ended.
            on_create_refused: called (from the sender's thread) if the creation is refused.
        """
        self._backend = backend
        self._run = run
        self._linked: dict[str, bytes] = {}  # digest -> bytes of files named as stored blobs
        self._sender = BatchSender(backend, run.id, create=create,
                                   on_create_refused=on_create_refused,
                                   on_blob_missing=self._upload_missing)
        self._params: dict[str, str] = dict(run.params)
        self._keys_ok: set[str] = set()
        self._ended = False
        self._on_end = on_end
        self._previous_sigterm: Any = None
        self._capture_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ identity

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def name(self) -> str:
        return self._run.name

    @property
    def experiment_id(self) -> str:
        return self._run.experiment_id

    @property
    def parent_run_id(self) -> str | None:
        return self._run.parent_run_id

    @property
    def info(self) -> Run:
        """The run as it was when started (use ``modelyard.get_run`` for fresh data)."""
        return self._run

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id} {self.name!r}>"

    # ------------------------------------------------------------------ logging

    def _key(self, key: str, field: str) -> str:
        if key not in self._keys_ok:
            v.validate_key(key, field=field)
            self._keys_ok.add(key)
        return key

    def _metric(self, key: str, value: float, step: int | None, timestamp: int | None) -> Metric:
        self._key(key, "metric key")
        metric = Metric(key, value, 0 if step is None else step,
                        _now() if timestamp is None else timestamp)
        return v.validate_metric(metric)

    def log_metric(self, key: str, value: float, step: int | None = None,
                   timestamp: int | None = None) -> None:
        """Record one point; it is sent in the background. Raises InvalidArgument at once."""
        self._sender.enqueue([self._metric(key, value, step, timestamp)])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None,
                    timestamp: int | None = None) -> None:
        ts = _now() if timestamp is None else timestamp
        self._sender.enqueue([self._metric(k, val, step, ts) for k, val in metrics.items()])

    def _param(self, key: str, value: Any) -> Param:
        text = v.as_text(value)
        param = v.validate_param(Param(self._key(key, "param key"), text))
        if key in self._params and self._params[key] != text:
            raise ParamOverwrite(
                f"param {key!r} was already logged with value {self._params[key][:100]!r}; "
                f"params are immutable, refusing new value {text[:100]!r}",
                field=f"params.{key}",
            )
        return param

    def log_param(self, key: str, value: Any) -> None:
        """Record a param (any value; stored as its string). Params are immutable."""
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        items = [self._param(k, val) for k, val in params.items()]
        self._sender.enqueue(list(items))
        self._params.update({p.key: p.value for p in items})

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [v.validate_tag(Tag(self._key(k, "tag key"), v.as_text(val)))
                 for k, val in tags.items()]
        self._sender.enqueue(list(items))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything logged so far is stored.

        Raises:
            LoggingRefused: listing each key the backend refused since the last raise, and
                why; every other value was stored. Unavailable: ``timeout`` ran out.
        """
        self._wait_for_capture()
        self._sender.flush(timeout)

    def wait_created(self) -> None:
        """Make sure the backend holds the run (its creation travels with the first batch).

        Raises:
            the error that refused the creation (the experiment was deleted meanwhile, ...).
        """
        self._sender.wait_created()

    # ------------------------------------------------------------------ source capture

    def capture_source_in_background(self, *, argv0: str | None, cwd: Path,
                                     keep: set[str]) -> None:
        """Record git state, diff and packages without delaying the caller.

        The capture describes the code this process runs (``argv0``, ``cwd``; one capture
        serves the runs of the next 10 s, see ``CAPTURES``); its tags (except those in
        ``keep``, which the user set) and files arrive through the normal paths. ``flush()``
        and run end wait for it. A failure is logged, never raised into training.
        """
        recent = CAPTURES.recent(argv0=argv0, cwd=cwd)
        if recent is not None and not self._uploads_needed(recent):
            self._record(recent, keep)  # all known: tags and stored blobs, queued at once
            return

        def work() -> None:
            try:
                self._record(CAPTURES.capture(argv0=argv0, cwd=cwd), keep)
            except Exception as exc:  # the run must go on without its source record
                log.warning("modelyard: source capture for run %s failed: %s", self.id, exc)

        self._capture_thread = threading.Thread(target=work, name="modelyard-capture",
                                                daemon=True)
        self._capture_thread.start()

    def _uploads_needed(self, capture: SourceCapture) -> bool:
        held = _held(self._backend)
        return any(digest not in held for _, _, digest in _files(capture))

    def _record(self, capture: SourceCapture, keep: set[str]) -> None:
        """Queue the capture's tags; its files travel as stored blobs when this process has
        stored the same bytes on this backend before, else they are uploaded (once)."""
        self._sender.enqueue([Tag(k, val) for k, val in capture.tags().items()
                              if k not in keep])
        held = _held(self._backend)
        for artifact_path, data, digest in _files(capture):
            if digest in held:
                self._linked[digest] = data
                self._sender.enqueue([ArtifactEntry(artifact_path, digest, len(data))])
                continue
            self._sender.wait_created()
            held.add(self._backend.upload_bytes(self.id, artifact_path, data).digest)

    def _upload_missing(self, entry: ArtifactEntry) -> bool:
        """The backend no longer holds a blob this process stored (collected since): upload
        the file after all (called from the sender's thread once the run exists)."""
        data = self._linked.get(entry.digest)
        if data is None:
            return False
        _held(self._backend).discard(entry.digest)
        try:
            stored = self._backend.upload_bytes(self.id, entry.path, data)
        except ModelyardError as exc:
            log.error("modelyard: run %s: uploading %s failed: %s", self.id, entry.path, exc)
            return False
        _held(self._backend).add(stored.digest)
        return True

    def _wait_for_capture(self) -> None:
        thread, self._capture_thread = self._capture_thread, None
        if thread is not None:
            thread.join()

    # ------------------------------------------------------------------ artifacts

    def log_artifact(self, local_path: str | Path, path: str | None = None) -> str:
        """Upload one file into the run's artifacts, under folder ``path``.

        Returns:
            the artifact path it was stored at.
        """
        src = Path(local_path)
        if not src.is_file():
            raise InvalidArgument(f"{str(src)!r} is not a file", field="local_path")
        dest = normalize_artifact_path(_join(path, src.name))
        self.wait_created()
        self._backend.upload_file(self.id, dest, src)
        return dest

    def log_artifacts(self, local_dir: str | Path, path: str | None = None) -> list[str]:
        """Upload every file below ``local_dir``, keeping relative paths, under ``path``."""
        root = Path(local_dir)
        if not root.is_dir():
            raise InvalidArgument(f"{str(root)!r} is not a directory", field="local_dir")
        # The whole tree is checked (symlinks that escape root refused) before any upload.
        plan = [(normalize_artifact_path(_join(path, rel)), file)
                for rel, file in iter_local_tree(root)]
        self.wait_created()
        run_parallel([functools.partial(self._backend.upload_file, self.id, dest, file)
                      for dest, file in plan])  # a few files at once
        return [dest for dest, _ in plan]

    def log_text(self, text: str, artifact_file: str) -> str:
        """Store ``text`` (UTF-8) as the artifact file ``artifact_file``."""
        dest = normalize_artifact_path(artifact_file)
        self.wait_created()
        self._backend.upload_bytes(self.id, dest, text.encode("utf-8"))
        return dest

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> str:
        """Store ``data`` as indented JSON in the artifact file ``artifact_file``."""
        dest = normalize_artifact_path(artifact_file)
        body = json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8")
        self.wait_created()
        self._backend.upload_bytes(self.id, dest, body)
        return dest

    # ------------------------------------------------------------------ ending

    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        """Send what is pending with the run's end, and mark it ended (idempotent).

        Raises:
            InvalidArgument: a status other than FINISHED, FAILED or KILLED.
            LoggingRefused: what the backend refused and was not raised yet (the run ended
                all the same, with ``status``, and carries the tag ``modelyard.logging_errors``).
        """
        final = v.run_status(str(status), terminal=True)
        if self._ended:
            return
        self._ended = True
        try:
            self._wait_for_capture()
            self._sender.finish(RunEnd(final, _now()),
                                timeout=None if final == RunStatus.FINISHED else 30.0)
        finally:
            if self._on_end is not None:
                self._on_end(self)

    def __enter__(self) -> ActiveRun:
        if threading.current_thread() is threading.main_thread():
            def _terminate(signum: int, frame: FrameType | None) -> None:
                raise RunTerminated(128 + signum)

            self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt | RunTerminated):
            status = RunStatus.KILLED
        elif issubclass(exc_type, SystemExit) and getattr(exc, "code", 1) in (0, None):
            status = RunStatus.FINISHED
        else:
            status = RunStatus.FAILED
        try:
            self.end(status)
        except ModelyardError as err:
            if exc is None:
                raise
            # The block's own exception goes on; what logging lost is said beside it.
            log.error("modelyard: %s", err)
            exc.add_note(f"modelyard: {err}")
