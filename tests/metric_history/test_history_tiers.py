"""A history's two tiers (rows, packed chunks) on SQLite and PostgreSQL: whatever the batches,
the history reads back exactly in history order, rows get packed when their key's threshold is
reached, and the bookkeeping (``latest_metrics.pending``) always equals the rows held.

Some tests shrink the packing constants so that small data makes many chunks; the code reads
them at call time, so the behaviour is the same one that runs at full size.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from modelyard.domain.entities import LogBatch, Metric
from modelyard.errors import IntegrityFailure, RunNotFound
from modelyard.stores.sql import SqlStores, history
from support.downsampling import reference_downsample
from support.stores import new_run

NAN, INF = math.nan, math.inf


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "PACK_AT", 8)
    monkeypatch.setattr(history, "CHUNK_MAX", 13)
    monkeypatch.setattr(history, "FETCH_POINTS", 40)


def expected(logged: Sequence[Metric]) -> list[tuple[int, int, float | str]]:
    """History order: step, timestamp, then logging order (Python's sort is stable)."""
    ordered = sorted(logged, key=lambda m: (m.step, m.timestamp))
    return [key_of(m) for m in ordered]


def key_of(m: Metric) -> tuple[int, int, float | str]:
    # Values compare as floats: SQLite keeps no sign on a zero row (-0.0 reads back 0.0).
    return (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)


def tiers(stores: SqlStores, run_id: str, key: str) -> tuple[int, int, int, int]:
    """Rows held, chunks, points in chunks, and the ``pending`` count of the key."""
    with stores.engine.connect() as conn:
        params = {"r": run_id, "k": key}
        rows = conn.execute(text("SELECT count(*) FROM metrics WHERE run_id = :r AND key = :k"),
                            params).scalar_one()
        chunks, packed = conn.execute(text(
            "SELECT count(*), COALESCE(sum(n), 0) FROM metric_chunks "
            "WHERE run_id = :r AND key = :k"), params).one()
        pending = conn.execute(text(
            "SELECT pending FROM latest_metrics WHERE run_id = :r AND key = :k"),
            params).scalar_one()
    return int(rows), int(chunks), int(packed), int(pending)


def test_rows_are_packed_at_the_keys_threshold(stores: SqlStores) -> None:
    r = new_run(stores)
    threshold = history.pack_threshold("loss")
    assert history.PACK_AT <= threshold < 2 * history.PACK_AT
    logged: list[Metric] = []
    step = 0
    while step < threshold + 300:
        batch = [Metric("loss", step * 0.5, step, 7) for step in range(step, step + 100)]
        step += 100
        stores.runs.log_batch(r, LogBatch(metrics=tuple(batch)), batch_id=None)
        logged += batch
        rows, chunks, packed, pending = tiers(stores, r, "loss")
        assert rows == pending and rows + packed == len(logged)
        assert (chunks == 0) == (len(logged) < threshold)  # packed exactly when it is due
    assert rows < 2 * history.PACK_AT and packed >= threshold
    assert [key_of(m) for m in stores.runs.get_metric_history(r, "loss")] == expected(logged)


def test_a_big_batch_becomes_a_chunk_and_takes_the_keys_rows_along(stores: SqlStores) -> None:
    r = new_run(stores)
    # Rows first, then a batch big enough for a chunk that repeats their (step, timestamp):
    # logging order must still put the rows' points first.
    rows = [Metric("m", float(i), i % 50, 1) for i in range(120)]
    big = [Metric("m", -float(i), i % 50, 1) for i in range(history.PACK_AT + 5)]
    other = [Metric("other", 1.0, 0, 0)]
    stores.runs.log_batch(r, LogBatch(metrics=tuple(rows + other)), batch_id=None)
    assert tiers(stores, r, "m")[:3] == (120, 0, 0)
    stores.runs.log_batch(r, LogBatch(metrics=tuple(big)), batch_id=None)
    assert tiers(stores, r, "m") == (0, 1, 120 + len(big), 0)
    assert tiers(stores, r, "other") == (1, 0, 0, 1)  # a key the batch did not bring: untouched
    assert [key_of(m) for m in stores.runs.get_metric_history(r, "m")] == expected(rows + big)
    latest = stores.runs.get_run(r).latest_metrics["m"]
    assert (latest.step, latest.value) == (49, 99.0)  # the largest value at the last step


def test_chunks_that_touch_at_one_step_are_merged_by_timestamp(stores: SqlStores,
                                                                small_chunks: None) -> None:
    """Two chunks share only their boundary step, the later one holding the earlier
    timestamp there: its point comes first although its chunk was written second."""
    r = new_run(stores)
    first = [Metric("m", float(i), i, 5) for i in range(10)]  # ends at step 9, timestamp 5
    second = [Metric("m", -float(i), 9 + i, 0) for i in range(10)]  # starts at step 9, ts 0
    for batch in (first, second):
        stores.runs.log_batch(r, LogBatch(metrics=tuple(batch)), batch_id=None)
    assert tiers(stores, r, "m")[1] == 2
    got = [key_of(m) for m in stores.runs.get_metric_history(r, "m")]
    assert got == expected(first + second)
    assert got[9:11] == [(9, 0, -0.0), (9, 5, 9.0)]
    pages = [int(x) for p in stores.runs.iter_metric_history(r, "m", page_size=4)
             for x in p.timestamps]
    assert pages == [t for _s, t, _v in expected(first + second)]


history_point = st.tuples(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True),
              st.sampled_from([0.0, -0.0, 1.0, NAN, INF, -INF])),
    st.one_of(st.integers(-5, 30), st.integers(-(2**63), 2**63 - 1)),
    st.integers(0, 2),
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(st.lists(history_point, max_size=30), max_size=12),
       max_points=st.integers(2, 40), page_size=st.integers(1, 50))
def test_any_sequence_of_batches_reads_back_exactly(
    stores: SqlStores, small_chunks: None, batches: list[list[tuple[float, int, int]]],
    max_points: int, page_size: int,
) -> None:
    """Rows, chunks written directly, chunks packed from rows, chunks split at ``CHUNK_MAX``,
    steps out of order and ties between tiers: the full history, its pages and its downsample
    are those of the points in logging order."""
    r = new_run(stores)
    logged: list[Metric] = []
    for batch in batches:
        points = [Metric("m", v, s, t) for v, s, t in batch]
        if points:
            stores.runs.log_batch(r, LogBatch(metrics=tuple(points)), batch_id=None)
            logged += points
            rows, _chunks, packed, pending = tiers(stores, r, "m")
            assert rows == pending and rows + packed == len(logged)
    full = stores.runs.get_metric_history(r, "m")
    assert [key_of(m) for m in full] == expected(logged)
    pages = list(stores.runs.iter_metric_history(r, "m", page_size=page_size))
    assert all(0 < len(p) <= page_size for p in pages)
    flat = [(int(s), int(t), "nan" if math.isnan(v) else float(v))
            for p in pages for s, t, v in zip(p.steps, p.timestamps, p.values, strict=True)]
    assert flat == expected(logged)
    got = stores.runs.get_metric_history(r, "m", max_points=max_points)
    assert [key_of(m) for m in got] == [key_of(m) for m in reference_downsample(full, max_points)]


def test_concurrent_writers_of_one_history_lose_and_repeat_nothing(stores: SqlStores,
                                                                   small_chunks: None) -> None:
    """Writers of the same key race rows in, packing, and chunks written directly."""
    r = new_run(stores)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for i in range(40):
                size = rng.choice([1, 3, 9, 20])  # below and above PACK_AT (8)
                points = tuple(Metric("m", float(worker), worker * 10_000 + i * 100 + j, 0)
                               for j in range(size))
                stores.runs.log_batch(r, LogBatch(metrics=points), batch_id=None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    steps = [m.step for m in stores.runs.get_metric_history(r, "m")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    rows, _chunks, packed, pending = tiers(stores, r, "m")
    assert rows == pending and rows + packed == len(steps)
    expected_steps = set()
    for worker in range(4):
        rng = random.Random(worker)
        for i in range(40):
            size = rng.choice([1, 3, 9, 20])
            expected_steps |= {worker * 10_000 + i * 100 + j for j in range(size)}
    assert set(steps) == expected_steps


def test_a_damaged_chunk_is_refused_not_misread(stores: SqlStores) -> None:
    r = new_run(stores)
    points = tuple(Metric("m", float(i), i, 0) for i in range(history.PACK_AT))
    stores.runs.log_batch(r, LogBatch(metrics=points), batch_id=None)
    with stores.engine.begin() as conn:
        conn.execute(text("UPDATE metric_chunks SET n = n + 1 WHERE run_id = :r"), {"r": r})
    with pytest.raises(IntegrityFailure) as exc:
        stores.runs.get_metric_history(r, "m")
    assert "altered outside modelyard" in exc.value.message
    with pytest.raises(IntegrityFailure):
        stores.runs.get_metric_history(r, "m", max_points=10)


def test_purging_a_run_removes_its_chunks(stores: SqlStores) -> None:
    r, kept = new_run(stores), new_run(stores)
    for run_id in (r, kept):
        points = tuple(Metric("m", 1.0, i, 0) for i in range(history.PACK_AT + 10))
        stores.runs.log_batch(run_id, LogBatch(metrics=points), batch_id=None)
    counted = stores.maintenance.count_rows(run_ids=[r], experiment_ids=[])
    purged = stores.maintenance.purge(run_ids=[r], experiment_ids=[])
    assert counted == purged and purged["metric_chunks"] == 1
    assert tiers(stores, kept, "m")[1:3] == (1, history.PACK_AT + 10)
    with stores.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM metric_chunks WHERE run_id = :r"),
                            {"r": r}).scalar_one()
    assert left == 0


@pytest.mark.parametrize("read", ["full", "downsample", "pages"])
def test_a_read_sees_one_snapshot_when_a_writer_packs_between_its_statements(
        stores: SqlStores, small_chunks: None, monkeypatch: pytest.MonkeyPatch,
        read: str) -> None:
    """The interleaving a review found: the reader lists the chunks, a writer packs the rows
    into a new chunk and commits, the reader reads the rows. Without one snapshot for both
    statements the packed points would be in neither; with it the read is the history as it
    was (5 points), never fewer."""
    r = new_run(stores)
    stores.runs.log_batch(r, LogBatch(metrics=tuple(Metric("m", float(i), i, 0)
                                                    for i in range(5))), batch_id=None)
    real = history._all
    injected: list[bool] = []

    def between(conn: object, stmt: object, params: dict[str, object]) -> list[object]:
        out = real(conn, stmt, params)  # type: ignore[arg-type]
        if stmt is history._CHUNK_LIST and not injected:
            injected.append(True)  # another client: a batch big enough to pack the rows along
            stores.runs.log_batch(r, LogBatch(metrics=tuple(
                Metric("m", 1.0, 100 + i, 0) for i in range(10))), batch_id=None)
        return out

    monkeypatch.setattr(history, "_all", between)
    if read == "full":
        got = [m.step for m in stores.runs.get_metric_history(r, "m")]
    elif read == "downsample":
        got = [m.step for m in stores.runs.get_metric_history(r, "m", max_points=100)]
    else:
        got = [int(x) for p in stores.runs.iter_metric_history(r, "m") for x in p.steps]
    monkeypatch.setattr(history, "_all", real)
    assert injected and got == [0, 1, 2, 3, 4]
    assert len(stores.runs.get_metric_history(r, "m")) == 15  # the writer's points landed


def test_an_export_of_a_purged_run_never_streams_another_runs_chunks(
        stores: SqlStores, small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "FETCH_POINTS", 10)  # one chunk per fetch
    victim = new_run(stores)
    for b in range(2):
        stores.runs.log_batch(victim, LogBatch(metrics=tuple(
            Metric("m", 1.0, b * 100 + i, 0) for i in range(10))), batch_id=None)
    pages = stores.runs.iter_metric_history(victim, "m", page_size=10)
    assert set(next(pages).values.tolist()) == {1.0}
    stores.maintenance.purge(run_ids=[victim], experiment_ids=[])
    other = new_run(stores)  # new chunks, perhaps with the purged ones' ids on SQLite
    for b in range(2):
        stores.runs.log_batch(other, LogBatch(metrics=tuple(
            Metric("m", 666.0, b * 100 + i, 0) for i in range(10))), batch_id=None)
    with pytest.raises(RunNotFound):
        list(pages)
