"""The background sender: logging calls enqueue and return; a thread ships batches.

Policy (documented in docs/sdk.md):
- a batch leaves when it is full (``batch_size`` points) or ``interval`` seconds after its first
  point, whichever comes first, and on ``flush()`` and at run end;
- the run's creation travels in its first batch and its end in its last, so a short run costs
  one request;
- every batch carries a random id, so a retry after a lost answer is stored exactly once;
- while the backend is unreachable the batch is retried with exponential backoff
  (0.1 s doubling up to 10 s) until it lands or ``close(timeout)`` gives up;
- at most ``max_pending`` points wait in memory; beyond that ``enqueue`` blocks the caller
  until the sender catches up (back-pressure, never silent loss);
- a refusal drops only what was refused: a param another process set to another value is
  taken out of the batch and the rest sent again (:mod:`modelyard.client.refusals` decides);
  every refused key is listed by the :class:`~modelyard.errors.LoggingRefused` that the next
  ``flush()`` or the run end raises, and counted in the run's tag ``modelyard.logging_errors``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from modelyard.backend.protocol import Backend
from modelyard.client.refusals import COUNT_TAG, Part, RefusalLog, split_refused
from modelyard.domain.entities import ArtifactEntry, LogBatch, Metric, NewRun, Param, RunEnd, Tag
from modelyard.domain.validation import (
    MAX_BATCH_ARTIFACTS,
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS,
    MAX_BATCH_TAGS,
)
from modelyard.errors import ArtifactNotFound, ErrorCode, ModelyardError, Unavailable

log = logging.getLogger("modelyard.client")

Item = Metric | Param | Tag | ArtifactEntry


class _GaveUp(Exception):
    """The backend stayed unreachable past ``close(timeout)``."""

    def __init__(self, error: Unavailable) -> None:
        self.error = error


class BatchSender:
    def __init__(
        self,
        backend: Backend,
        run_id: str,
        *,
        create: NewRun | None = None,
        on_create_refused: Callable[[ModelyardError], None] | None = None,
        on_blob_missing: Callable[[ArtifactEntry], bool] | None = None,
        batch_size: int = MAX_BATCH_METRICS,
        interval: float = 1.0,
        max_pending: int = 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Args:
            create: the run's creation, sent with the first batch (None: it exists).
            on_create_refused: called with the error if the creation is refused.
            on_blob_missing: called (from the sender's thread) with a stored blob a batch
                named that the backend no longer holds; True when it uploaded the file.
        """
        self._backend = backend
        self._run_id = run_id
        self._batch_size = batch_size
        self._interval = interval
        self._max_pending = max_pending
        self._sleep = sleep
        self._queue: deque[Item] = deque()
        self._cond = threading.Condition()
        self._first_at: float | None = None
        self._inflight = 0
        self._busy = False
        self._flushers = 0  # callers waiting for everything to be sent
        self._closing = False
        self._give_up_at: float | None = None
        self._create = create
        self._create_error: ModelyardError | None = None
        self._create_in_flight = False
        self._on_create_refused = on_create_refused
        self._on_blob_missing = on_blob_missing
        self._end: RunEnd | None = None
        self._ending = False  # finish() was called: nothing more may be enqueued
        self._refusals = RefusalLog(run_id)
        self._reported = 0  # the refusal count the run's tag says
        self._thread = threading.Thread(target=self._loop, name=f"modelyard-sender-{run_id[:8]}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def enqueue(self, items: list[Item]) -> None:
        with self._cond:
            while len(self._queue) + len(items) > self._max_pending and not self._closing:
                self._cond.wait(0.1)  # back-pressure
            if self._closing or self._ending:
                raise ModelyardError("the run has ended; nothing more can be logged to it")
            if self._create_error is not None:  # fail fast: the run will never exist
                err = self._create_error
                raise type(err)(f"run {self._run_id} could not be created, so nothing can be "
                                f"logged to it: {err.message}", field=err.field)
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.extend(items)
            if len(self._queue) >= self._batch_size:
                self._cond.notify_all()

    def _pending_locked(self) -> bool:
        return bool(self._queue or self._busy or self._create is not None
                    or self._end is not None)

    def _wait_sent(self, timeout: float | None, until: Callable[[], bool]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._flushers += 1
        self._cond.notify_all()
        try:
            while not until():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Unavailable(
                        f"{len(self._queue) + self._inflight} logged values are not stored "
                        f"yet after {timeout} s; the backend is unreachable"
                    )
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
        finally:
            self._flushers -= 1

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything enqueued so far is stored (or refused).

        Raises:
            LoggingRefused: listing what the backend refused since the last raise (everything
                else was stored); Unavailable when ``timeout`` ran out.
        """
        with self._cond:
            self._wait_sent(timeout, lambda: not self._pending_locked())
        self._report_count()
        with self._cond:
            error = self._refusals.take_error()
        if error is not None:
            raise error

    def wait_created(self, timeout: float | None = None) -> None:
        """Block until the run's creation has reached the backend (sending what is queued).

        Raises:
            the error that refused the creation; Unavailable when ``timeout`` ran out.
        """
        with self._cond:
            if self._create is not None or self._create_in_flight:
                self._wait_sent(timeout, lambda: self._create is None
                                and not self._create_in_flight)
            if self._create_error is not None:
                raise self._create_error

    def finish(self, end: RunEnd, timeout: float | None = None) -> None:
        """Send what is queued with the run's end in the last batch, then stop the thread.

        Raises:
            LoggingRefused: what was refused and not yet raised (the run ended all the same,
                unless its end is listed); Unavailable: the backend stayed unreachable for
                ``timeout`` seconds (what was not sent is listed as refused).
        """
        part = None
        with self._cond:
            self._end = end
            self._ending = True
            if timeout is None and not self._busy and len(self._queue) <= self._batch_size:
                # The thread is idle and all that is left may fit one batch: send it from
                # here, sparing a short run two thread hand-overs (the thread waits while a
                # part is in flight, and sends any rest, with the end, after it).
                part = self._take_part()
            self._cond.notify_all()
        if part is not None:
            self._deliver_marked(part)
        self.close(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the thread. With a timeout, unsent values are given up after it.

        Raises:
            LoggingRefused: what was refused and not yet raised; Unavailable: the timeout ran
                out (the refusals, if any, are added to it as a note).
        """
        try:
            with self._cond:
                self._wait_sent(timeout, lambda: not self._pending_locked())
        except Unavailable as exc:
            self._stop()
            with self._cond:
                error = self._refusals.take_error()
            if error is not None:
                exc.add_note(str(error))
            raise
        self._stop()
        self._report_count()
        with self._cond:
            error = self._refusals.take_error()
        if error is not None:
            raise error

    def _stop(self) -> None:
        with self._cond:
            self._closing = True
            self._give_up_at = time.monotonic()
            self._cond.notify_all()
        self._thread.join(5.0)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    @property
    def refused_count(self) -> int:
        """How many values (and run creations or ends) were refused in all."""
        return self._refusals.total

    # ------------------------------------------------------------------ thread side

    def _take_batch(self) -> LogBatch:
        metrics: list[Metric] = []
        params: list[Param] = []
        tags: list[Tag] = []
        artifacts: list[ArtifactEntry] = []
        while self._queue:
            item = self._queue[0]
            if isinstance(item, Metric):
                if len(metrics) >= min(self._batch_size, MAX_BATCH_METRICS):
                    break
                metrics.append(item)
            elif isinstance(item, Param):
                if len(params) >= MAX_BATCH_PARAMS:
                    break
                params.append(item)
            elif isinstance(item, Tag):
                if len(tags) >= MAX_BATCH_TAGS - 1:  # room for the refusal count
                    break
                tags.append(item)
            else:
                if len(artifacts) >= MAX_BATCH_ARTIFACTS:
                    break
                artifacts.append(item)
            self._queue.popleft()
        if self._refusals.total != self._reported:
            self._reported = self._refusals.total
            tags.append(Tag(COUNT_TAG, str(self._reported)))
        return LogBatch(tuple(metrics), tuple(params), tuple(tags), tuple(artifacts))

    def _due(self) -> bool:
        if not self._queue:
            return self._flushers > 0 and (self._create is not None or self._end is not None)
        if self._flushers > 0 or self._closing or len(self._queue) >= self._batch_size:
            return True
        return self._first_at is not None and time.monotonic() - self._first_at >= self._interval

    def _loop(self) -> None:
        while True:
            with self._cond:
                # One part in flight at a time (the caller may be sending one: finish()), so
                # the creation lands before anything else of the run and the end after it.
                while self._busy or not self._due():
                    if self._closing and not self._queue and not self._busy:
                        return
                    self._cond.wait(self._interval / 4)
                part = self._take_part()
                self._cond.notify_all()
            self._deliver_marked(part)

    def _take_part(self) -> Part:
        """The next batch, with the run's creation if still unsent and its end if this is the
        last; marks the sender busy until :meth:`_deliver_marked` is done with it."""
        batch = self._take_batch()
        create, self._create = self._create, None
        self._create_in_flight = create is not None
        end = None
        if not self._queue:  # the end travels with the last batch
            end, self._end = self._end, None
        self._inflight = len(batch)
        self._busy = True
        self._first_at = time.monotonic() if self._queue else None
        return Part(batch, create, end)

    def _deliver_marked(self, part: Part) -> None:
        try:
            self._deliver(part)
        finally:
            with self._cond:
                self._inflight = 0
                self._busy = False
                self._create_in_flight = False
                self._cond.notify_all()

    def _deliver(self, first: Part) -> None:
        """Send a part; on a refusal, send again whatever the refusal did not concern."""
        todo = [first]
        missing: list[tuple[Part, ModelyardError]] = []  # named blobs the backend lacks
        while todo:
            part = todo.pop()
            try:
                self._send(part)
            except _GaveUp as gave_up:
                log.error("modelyard: giving up %d logged values: %s", part.size, gave_up.error)
                self._refused(part, gave_up.error)
            except ModelyardError as exc:
                refused, rest = split_refused(part, exc)
                if refused is not None and isinstance(exc, ArtifactNotFound):
                    missing.append((refused, exc))  # uploaded once the rest (the run) is in
                    refused = None
                if refused is not None:
                    log.error("modelyard: run %s: refused %s", self._run_id, exc)
                    self._refused(refused, exc)
                todo.extend(reversed(rest))  # in order: the first part is sent first
            except Exception as exc:  # a bug must not kill the thread silently
                log.exception("modelyard: unexpected error while sending")
                self._refused(part, ModelyardError(f"unexpected error while sending: {exc}"))
        for lacking, error in missing:
            left = self._upload_instead(lacking)
            if left is not None:
                log.error("modelyard: run %s: refused %s", self._run_id, error)
                self._refused(left, error)

    def _upload_instead(self, part: Part) -> Part | None:
        """A stored blob named in a batch is not held (garbage collection freed it): upload
        the bytes instead when the caller can (``on_blob_missing``). Returns: what is still
        refused, if anything."""
        if self._on_blob_missing is None or part.create is not None or part.end is not None:
            return part
        left = tuple(a for a in part.batch.artifacts if not self._on_blob_missing(a))
        if not left and len(part.batch) == len(part.batch.artifacts):
            return None
        return Part(replace(part.batch, artifacts=left))

    def _refused(self, part: Part, exc: ModelyardError) -> None:
        with self._cond:
            # A server failure is no answer about the run: the next part creates it again.
            if (part.create is not None and exc.code is ErrorCode.INTERNAL
                    and self._create is None and not self._ending):
                self._create = part.create
                self._refusals.add(replace(part, create=None), exc)
                return
            self._refusals.add(part, exc)
            if part.create is None:
                return
            self._create_error = exc
        if self._on_create_refused is not None:
            self._on_create_refused(exc)

    def _send(self, part: Part) -> None:
        batch_id = uuid.uuid4().hex
        kwargs: dict[str, Any] = {"batch_id": batch_id}
        if part.create is not None:
            kwargs["create"] = part.create
        if part.end is not None:
            kwargs["end"] = part.end
        delay = 0.1
        while True:
            try:
                self._backend.log_batch(self._run_id, part.batch, **kwargs)
                return
            except Unavailable as exc:
                with self._cond:
                    if self._give_up_at is not None:
                        raise _GaveUp(exc) from exc
                log.warning("modelyard: backend unavailable, retrying in %.1f s: %s", delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, 10.0)

    def _report_count(self) -> None:
        """After the last batch: bring the run's refusal count tag up to date."""
        with self._cond:
            total = self._refusals.total
            if total == self._reported:
                return
            self._reported = total
        tag = LogBatch(tags=(Tag(COUNT_TAG, str(total)),))
        try:
            self._backend.log_batch(self._run_id, tag, batch_id=uuid.uuid4().hex)
        except ModelyardError as exc:  # the run itself is gone: its refusals say so already
            log.error("modelyard: could not tag run %s with its refusal count: %s",
                      self._run_id, exc)
