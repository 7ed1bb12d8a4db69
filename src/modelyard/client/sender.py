"""The background sender: logging calls enqueue and return; a thread ships batches.

Policy (documented in docs/sdk.md):
- a batch leaves when it is full (``batch_size`` points) or ``interval`` seconds after its first
  point, whichever comes first, and on ``flush()``, run end and interpreter exit;
- every batch carries a random id, so a retry after a lost answer is stored exactly once;
- while the backend is unreachable the batch is retried with exponential backoff
  (0.1 s doubling up to 10 s) until it lands or ``close(timeout)`` gives up;
- at most ``max_pending`` points wait in memory; beyond that ``enqueue`` blocks the caller
  until the sender catches up (back-pressure, never silent loss);
- an error the backend refuses for good (a 4xx: bad input, param overwrite, deleted run)
  drops that batch and is raised by the next ``flush()`` or at run end.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from modelyard.backend.protocol import Backend
from modelyard.domain.entities import LogBatch, Metric, Param, Tag
from modelyard.domain.validation import MAX_BATCH_METRICS, MAX_BATCH_PARAMS, MAX_BATCH_TAGS
from modelyard.errors import ModelyardError, Unavailable

log = logging.getLogger("modelyard.client")

Item = Metric | Param | Tag


class BatchSender:
    def __init__(
        self,
        backend: Backend,
        run_id: str,
        *,
        batch_size: int = MAX_BATCH_METRICS,
        interval: float = 1.0,
        max_pending: int = 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
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
        self._flush_requested = False
        self._closing = False
        self._give_up_at: float | None = None
        self._errors: list[ModelyardError] = []
        self._thread = threading.Thread(target=self._loop, name=f"modelyard-sender-{run_id[:8]}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def enqueue(self, items: list[Item]) -> None:
        with self._cond:
            while len(self._queue) + len(items) > self._max_pending and not self._closing:
                self._cond.wait(0.1)  # back-pressure
            if self._closing:
                raise ModelyardError("the run has ended; nothing more can be logged to it")
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.extend(items)
            if len(self._queue) >= self._batch_size:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything enqueued so far is stored; raise what the backend refused.

        Raises:
            the first ModelyardError a batch met; Unavailable when ``timeout`` ran out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._queue or self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Unavailable(
                        f"{len(self._queue) + self._inflight} logged values are not stored yet "
                        f"after {timeout} s; the backend is unreachable"
                    )
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
            self._flush_requested = False
            if self._errors:
                first, self._errors = self._errors[0], []
                raise first

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the thread. With a timeout, unsent values are dropped after it."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._give_up_at = time.monotonic()
                self._cond.notify_all()
            self._thread.join(5.0)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    # ------------------------------------------------------------------ thread side

    def _take_batch(self) -> LogBatch:
        metrics: list[Metric] = []
        params: list[Param] = []
        tags: list[Tag] = []
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
            else:
                if len(tags) >= MAX_BATCH_TAGS:
                    break
                tags.append(item)
            self._queue.popleft()
        return LogBatch(tuple(metrics), tuple(params), tuple(tags))

    def _due(self) -> bool:
        if not self._queue:
            return False
        if self._flush_requested or self._closing or len(self._queue) >= self._batch_size:
            return True
        return self._first_at is not None and time.monotonic() - self._first_at >= self._interval

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closing and not self._queue:
                        return
                    self._cond.wait(self._interval / 4)
                batch = self._take_batch()
                self._inflight = len(batch)
                self._first_at = time.monotonic() if self._queue else None
                self._cond.notify_all()
            self._send(batch)
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()

    def _send(self, batch: LogBatch) -> None:
        batch_id = uuid.uuid4().hex
        delay = 0.1
        while True:
            try:
                self._backend.log_batch(self._run_id, batch, batch_id=batch_id)
                return
            except Unavailable as exc:
                with self._cond:
                    if self._give_up_at is not None:
                        log.error("modelyard: dropping %d logged values: %s", len(batch), exc)
                        self._errors.append(exc)
                        return
                log.warning("modelyard: backend unavailable, retrying in %.1f s: %s", delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, 10.0)
            except ModelyardError as exc:
                log.error("modelyard: batch refused: %s", exc)
                with self._cond:
                    self._errors.append(exc)
                return
            except Exception as exc:  # a bug must not kill the thread silently
                log.exception("modelyard: unexpected error while sending")
                with self._cond:
                    self._errors.append(ModelyardError(f"unexpected error while sending: {exc}"))
                return
