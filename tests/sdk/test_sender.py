"""The background sender against real backends: embedded, and a real server over HTTP.

No assertion here is about speed (that is the benchmark's, ``bench/``); waits are for events,
with generous deadlines (shared CI machines). What is strict is the data: every point stored
exactly once, in order, and every refusal reported.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.backend.local import LocalBackend
from modelyard.backend.remote import RemoteBackend
from modelyard.client.run import ActiveRun
from modelyard.client.sender import BatchSender
from modelyard.domain.entities import LogBatch, Metric, NewRun, Param, Run, RunEnd, RunStatus, Tag
from modelyard.errors import (
    InvalidArgument,
    InvalidState,
    LoggingRefused,
    ModelyardError,
    ParamOverwrite,
    RunNotFound,
    Unavailable,
)
from modelyard.settings import Settings
from support.servers import ServerThread, free_port
from support.waiting import wait_until, waiting_in


def points(start: int, stop: int, key: str = "m") -> list[Metric]:
    return [Metric(key, float(i), i, 1_000 + i) for i in range(start, stop)]


def steps(backend: Any, run_id: str, key: str = "m") -> list[int]:
    return [m.step for m in backend.get_metric_history(run_id, key)]


@pytest.fixture
def run(backend: Any) -> Run:
    r: Run = backend.create_run("0", run_name="sender")
    return r


@pytest.fixture
def senders() -> Iterator[list[BatchSender]]:
    """Senders made by a test; closed at teardown so no thread outlives it."""
    made: list[BatchSender] = []
    yield made
    for s in made:
        with contextlib.suppress(ModelyardError):
            s.close(timeout=5)


def make(senders: list[BatchSender], *args: Any, **kwargs: Any) -> BatchSender:
    s = BatchSender(*args, **kwargs)
    senders.append(s)
    return s


def test_ten_thousand_log_metric_calls_are_stored_in_order(backend: Any, run: Run) -> None:
    # How long a log_metric call takes its caller is measured by the benchmark, not here:
    # bench/ workload (a), "one metric per call" (bench/workloads_modelyard.py
    # w_metric_stream), reported as "(a) log_metric calls/s, the caller's side" in
    # bench/results.md (and docs/benchmarks.md for the runs of record).
    active = ActiveRun(backend, run)
    try:
        for i in range(10_000):
            active.log_metric("loss", i * 0.001, step=i)
        active.flush()
        assert steps(backend, run.id, "loss") == list(range(10_000))
    finally:
        active.end()


def test_batches_leave_by_size_and_by_interval(backend: Any, run: Run,
                                               senders: list[BatchSender]) -> None:
    by_size = make(senders, backend, run.id, batch_size=50, interval=60.0)
    for m in points(0, 50):
        by_size.enqueue([m])
    # Full: it leaves at once, without flush(), long before the 60 s interval.
    wait_until(lambda: len(steps(backend, run.id)) == 50, timeout=10,  # well inside 60 s
               what="a full batch to leave without flush()")
    by_size.enqueue(points(50, 60))
    # Not a wait for an event: a window in which nothing may happen (no event says "the
    # sender decided not to send"); 10 points are neither full nor due for 60 s.
    time.sleep(0.3)
    assert len(steps(backend, run.id)) == 50
    assert by_size.pending == 10
    by_size.close()
    assert steps(backend, run.id) == list(range(60))  # close() flushed the rest

    other = backend.create_run("0")
    by_time = make(senders, backend, other.id, batch_size=10_000, interval=0.5)
    by_time.enqueue(points(0, 7))
    assert steps(backend, other.id) == []  # not due yet
    # Due 0.5 s after its first point: stored without any flush().
    wait_until(lambda: steps(backend, other.id) == list(range(7)), timeout=10,
               what="a batch that is due to leave without flush()")
    assert by_time.pending == 0


def test_flush_blocks_until_everything_is_stored(backend: Any, run: Run,
                                                 senders: list[BatchSender]) -> None:
    sender = make(senders, backend, run.id, batch_size=1000, interval=60.0)
    sender.flush()  # nothing pending: returns at once
    sender.enqueue(points(0, 2500))
    sender.enqueue([Param("p", "v"), Tag("t", "x")])
    sender.enqueue(points(2500, 3000))
    sender.flush()
    assert sender.pending == 0
    assert steps(backend, run.id) == list(range(3000))  # stored when flush() returned
    got = backend.get_run(run.id)
    assert got.params == {"p": "v"}
    assert got.tags["t"] == "x"


class Gated:
    """A real backend behind a gate: log_batch waits until the test opens it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()

    def log_batch(self, run_id: str, batch: LogBatch, **kwargs: Any) -> bool:
        assert self.gate.wait(20), "the gate was never opened"
        return bool(self.inner.log_batch(run_id, batch, **kwargs))


def test_back_pressure_blocks_enqueue_instead_of_dropping(backend: Any, run: Run,
                                                         senders: list[BatchSender]) -> None:
    gated = Gated(backend)
    sender = make(senders, gated, run.id, batch_size=5, interval=0.01, max_pending=20)
    enqueued = 0

    def produce() -> None:
        nonlocal enqueued
        for m in points(0, 100):
            sender.enqueue([m])
            enqueued += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # The backend is stuck: the producer ends up blocked in enqueue (never done with its 100
    # points), holding at most max_pending queued points plus the one batch in flight.
    wait_until(lambda: waiting_in(producer, "enqueue"), timeout=20,
               what="the producer to block in enqueue() (back-pressure)")
    assert producer.is_alive()
    assert 20 <= enqueued <= 25
    assert sender.pending <= 25
    gated.gate.set()
    producer.join(20)
    assert not producer.is_alive()
    sender.flush(timeout=20)
    assert enqueued == 100
    assert steps(backend, run.id) == list(range(100))  # nothing lost, nothing doubled


def test_a_refused_param_is_taken_out_and_the_rest_stored(backend: Any, run: Run,
                                                          senders: list[BatchSender]) -> None:
    sender = make(senders, backend, run.id, interval=60.0)
    sender.enqueue([Param("lr", "0.1")])
    sender.flush()
    # Sent straight through the sender (ActiveRun would refuse it before enqueueing), as
    # another process setting the param first would make the server refuse it.
    sender.enqueue([Param("lr", "0.2"), Param("depth", "3"), *points(0, 3), Tag("t", "x")])
    with pytest.raises(LoggingRefused) as info:
        sender.flush()
    [refused] = info.value.refused
    assert (refused.kind, refused.key, refused.count) == ("param", "lr", 1)
    assert isinstance(refused.error, ParamOverwrite)
    assert refused.error.field == "params.lr"
    assert "param 'lr'" in str(info.value) and "'0.1'" in str(info.value)
    sender.flush()  # reported once, then cleared
    got = backend.get_run(run.id)
    assert got.params == {"lr": "0.1", "depth": "3"}  # every other value was stored
    assert got.tags["t"] == "x"
    assert steps(backend, run.id) == [0, 1, 2]
    assert got.tags["modelyard.logging_errors"] == "1"  # a search can find such runs
    sender.enqueue(points(3, 5))
    sender.flush()
    assert steps(backend, run.id) == [0, 1, 2, 3, 4]  # the sender goes on after a refusal
    sender.enqueue([Param("lr", "0.3")])
    with pytest.raises(LoggingRefused):
        sender.close()  # a refusal still pending at close is raised there
    assert backend.get_run(run.id).tags["modelyard.logging_errors"] == "2"
    with pytest.raises(ModelyardError):
        sender.enqueue(points(5, 6))  # closed


def test_a_refusal_of_the_run_refuses_everything_for_it(backend: Any, run: Run,
                                                        senders: list[BatchSender]) -> None:
    sender = make(senders, backend, run.id, interval=60.0)
    backend.delete_run(run.id)
    sender.enqueue([*points(0, 4), Param("p", "v"), *points(0, 2, key="other")])
    with pytest.raises(LoggingRefused) as info:
        sender.flush()
    by_key = {(r.kind, r.key): r.count for r in info.value.refused}
    assert by_key == {("metric", "m"): 4, ("param", "p"): 1, ("metric", "other"): 2}
    assert all(isinstance(r.error, InvalidState) for r in info.value.refused)
    assert "deleted" in str(info.value)


class RefusesValues:
    """A real backend that also refuses any batch holding a metric of one key, as a server
    with stricter limits would: the sender must isolate those points by halving."""

    def __init__(self, inner: Any, bad_key: str) -> None:
        self.inner = inner
        self.bad_key = bad_key
        self.calls = 0

    def log_batch(self, run_id: str, batch: LogBatch, **kwargs: Any) -> bool:
        self.calls += 1
        if any(m.key == self.bad_key for m in batch.metrics):
            raise InvalidArgument(f"metric {self.bad_key!r} refused here", field="metrics.value")
        return bool(self.inner.log_batch(run_id, batch, **kwargs))


def test_other_refusals_are_isolated_by_halving(backend: Any, run: Run,
                                               senders: list[BatchSender]) -> None:
    strict = RefusesValues(backend, "bad")
    sender = make(senders, strict, run.id, interval=60.0)
    good = points(0, 50)
    sender.enqueue([*good[:20], Metric("bad", 1.0, 0, 0), *good[20:], Param("p", "1")])
    with pytest.raises(LoggingRefused) as info:
        sender.flush()
    assert [(r.kind, r.key, r.count) for r in info.value.refused] == [("metric", "bad", 1)]
    assert steps(backend, run.id) == list(range(50))  # every valid point, in order
    assert backend.get_run(run.id).params == {"p": "1"}
    assert strict.calls <= 2 * 7 + 2  # about two requests per halving, not one per point


def test_creation_travels_with_the_first_batch_and_end_with_the_last(
        backend: Any, senders: list[BatchSender]) -> None:
    run_id = uuid.uuid4().hex
    create = NewRun("0", "deferred", "u", 1_000)
    sender = make(senders, backend, run_id, create=create, interval=60.0)
    sender.enqueue(points(0, 3))
    with pytest.raises(RunNotFound):
        backend.get_run(run_id)  # nothing sent yet: the run is created by its first batch
    sender.wait_created()
    got = backend.get_run(run_id)
    assert (got.name, got.status, got.start_time) == ("deferred", RunStatus.RUNNING, 1_000)
    assert steps(backend, run_id) == [0, 1, 2]  # the points went with the creation
    sender.enqueue(points(3, 5))
    sender.finish(RunEnd(RunStatus.FAILED, 2_000))
    got = backend.get_run(run_id)
    assert (got.status, got.end_time) == (RunStatus.FAILED, 2_000)
    assert steps(backend, run_id) == [0, 1, 2, 3, 4]


def test_a_refused_creation_is_raised_and_refuses_what_was_logged(
        backend: Any, senders: list[BatchSender]) -> None:
    exp = backend.create_experiment(f"doomed-{uuid.uuid4().hex[:6]}")
    backend.delete_experiment(exp.experiment_id)
    seen: list[ModelyardError] = []
    sender = make(senders, backend, uuid.uuid4().hex, interval=60.0,
                  create=NewRun(exp.experiment_id, "r", "u", 1), on_create_refused=seen.append)
    sender.enqueue(points(0, 3))
    with pytest.raises(InvalidState, match="deleted"):
        sender.wait_created()
    assert len(seen) == 1 and isinstance(seen[0], InvalidState)
    with pytest.raises(LoggingRefused) as info:
        sender.finish(RunEnd(RunStatus.FINISHED, 2))
    assert {(r.kind, r.key) for r in info.value.refused} == {
        ("run", "creation"), ("metric", "m"), ("run", "end")}


# ----------------------------------------------------------------------------- outages


def test_retries_while_the_server_is_down_then_stores_exactly_once(
    settings: Settings, senders: list[BatchSender]
) -> None:
    local = LocalBackend(settings)
    port = free_port()  # nothing listens there yet
    remote = RemoteBackend(f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10.0, connect=1.0))
    try:
        run = local.create_run("0")
        delays: list[float] = []

        def sleep(delay: float) -> None:
            delays.append(delay)
            # The sender's own back-off (what it is given to sleep with), compressed: the
            # behaviour under test, not a wait for an event.
            time.sleep(min(delay, 0.05))

        sender = make(senders, remote, run.id, batch_size=100, interval=0.05, sleep=sleep)
        sender.enqueue(points(0, 250))
        sender.enqueue([Param("p", "v")])
        wait_until(lambda: len(delays) >= 4, timeout=30, what="four retries of the sender")
        with pytest.raises(Unavailable):
            sender.flush(timeout=0.2)
        assert sender.pending == 251  # kept, not dropped
        assert steps(local, run.id) == []
        assert delays[:4] == [0.1, 0.2, 0.4, 0.8]  # exponential backoff

        with ServerThread(settings, port=port):
            sender.flush(timeout=30)
            assert steps(local, run.id) == list(range(250))  # each point exactly once
            assert local.get_run(run.id).params == {"p": "v"}
            sender.close()
    finally:
        remote.close()
        local.close()


class LosesFirstAnswer:
    """A real backend whose first answer is lost on the way back (the batch *was* stored)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batch_ids: list[str | None] = []
        self.results: list[bool] = []

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None = None) -> bool:
        stored = bool(self.inner.log_batch(run_id, batch, batch_id=batch_id))
        self.batch_ids.append(batch_id)
        self.results.append(stored)
        if len(self.batch_ids) == 1:
            raise Unavailable("connection reset before the answer arrived")
        return stored


def test_retry_after_a_lost_answer_is_stored_once(server: Any,
                                                  senders: list[BatchSender]) -> None:
    remote = RemoteBackend(server.url)
    try:
        run = remote.create_run("0")
        flaky = LosesFirstAnswer(remote)
        sender = make(senders, flaky, run.id, interval=60.0, sleep=lambda _: None)
        sender.enqueue(points(0, 40))
        sender.flush(timeout=20)
        assert flaky.batch_ids[0] is not None
        assert flaky.batch_ids[:2] == [flaky.batch_ids[0]] * 2  # the retry reuses the id
        assert flaky.results[:2] == [True, False]  # ... and the server saw a duplicate
        assert steps(remote, run.id) == list(range(40))
    finally:
        remote.close()


class Slow:
    """A real backend whose first call takes a while, as a slow network would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.concurrent = 0
        self.most = 0
        self.lock = threading.Lock()

    def log_batch(self, run_id: str, batch: LogBatch, **kwargs: Any) -> bool:
        with self.lock:
            self.calls += 1
            self.concurrent += 1
            self.most = max(self.most, self.concurrent)
            first = self.calls == 1
        try:
            if first:
                # A slow network, the behaviour under test: the window in which a second
                # part could overtake the first (not a wait for an event).
                time.sleep(0.5)
            return bool(self.inner.log_batch(run_id, batch, **kwargs))
        finally:
            with self.lock:
                self.concurrent -= 1


def test_one_part_in_flight_when_the_end_outgrows_one_batch(
        backend: Any, senders: list[BatchSender]) -> None:
    slow = Slow(backend)
    run_id = uuid.uuid4().hex
    sender = make(senders, slow, run_id, create=NewRun("0", "big", "u", 1), interval=0.01)
    sender.enqueue([Param(f"p{i}", "v") for i in range(1500)])  # two batches of params
    sender.finish(RunEnd(RunStatus.FINISHED, 2))
    got = backend.get_run(run_id)
    assert len(got.params) == 1500
    assert got.status is RunStatus.FINISHED and got.end_time == 2
    assert slow.calls == 2 and slow.most == 1  # the creation landed before the rest left


def test_wait_created_does_not_wait_for_the_backlog(backend: Any,
                                                    senders: list[BatchSender]) -> None:
    gated = Gated(backend)
    run_id = uuid.uuid4().hex
    sender = make(senders, gated, run_id, create=NewRun("0", "r", "u", 1), batch_size=5,
                  interval=60.0)
    gated.gate.set()
    sender.wait_created()
    gated.gate.clear()  # the backend stalls from now on
    sender.enqueue(points(0, 50))
    sender.wait_created()  # created already: returns at once, whatever is queued
    assert sender.pending > 0
    gated.gate.set()
    sender.flush(timeout=20)
    assert steps(backend, run_id) == list(range(50))
