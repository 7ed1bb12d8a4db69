"""Downsampled and streamed metric histories in the SQL store, on SQLite and PostgreSQL.

The store downsamples its packed columns; every answer is compared with a plain-Python
statement of the same rule (``support.downsampling``) on the full history read back.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.domain.entities import LogBatch, Metric
from modelyard.errors import RunNotFound
from modelyard.stores.sql import SqlStores
from support.downsampling import reference_downsample
from support.stores import new_run

NAN, INF = math.nan, math.inf
INT64 = (-(2**63), 2**63 - 1)


def log(stores: SqlStores, run_id: str, points: Sequence[Metric]) -> None:
    for start in range(0, len(points), 10_000):
        batch = LogBatch(metrics=tuple(points[start : start + 10_000]))
        stores.runs.log_batch(run_id, batch, batch_id=None)


def key_of(m: Metric) -> tuple[int, int, float | str]:
    return (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)


def same(a: Sequence[Metric], b: Sequence[Metric]) -> bool:
    return [key_of(m) for m in a] == [key_of(m) for m in b]


def assert_shape(points: Sequence[Metric], full: Sequence[Metric], max_points: int) -> None:
    assert len(points) <= max_points
    assert [key_of(points[0]), key_of(points[-1])] == [key_of(full[0]), key_of(full[-1])]
    steps = [m.step for m in points]
    assert steps == sorted(steps)


# ---------------------------------------------------------------------- shape


def test_a_spike_in_the_middle_survives(stores: SqlStores) -> None:
    r = new_run(stores)
    points = [Metric("loss", 1.0 / (i + 1), i, 1000 + i) for i in range(20_000)]
    points[12_345] = Metric("loss", 50.0, 12_345, 1000 + 12_345)  # one spike
    points[7_777] = Metric("loss", -3.0, 7_777, 1000 + 7_777)  # one dip
    log(stores, r, points)
    for max_points in (2, 4, 10, 100, 1000):
        got = stores.runs.get_metric_history(r, "loss", max_points=max_points)
        assert_shape(got, points, max_points)
        if max_points >= 4:
            assert Metric("loss", 50.0, 12_345, 1000 + 12_345) in got
            assert Metric("loss", -3.0, 7_777, 1000 + 7_777) in got
        else:  # room for the first and last point only
            assert got == [points[0], points[-1]]
    got = stores.runs.get_metric_history(r, "loss", max_points=1000)
    assert 900 <= len(got) <= 1000  # the budget is used, not wasted
    assert same(got, reference_downsample(points, 1000))


def test_nan_and_infinities_are_never_hidden(stores: SqlStores) -> None:
    r = new_run(stores)
    points = [Metric("m", math.sin(i / 100), i, i) for i in range(10_000)]
    for i, v in ((2_000, INF), (5_000, NAN), (5_001, NAN), (8_000, -INF)):
        points[i] = Metric("m", v, i, i)
    log(stores, r, points)
    got = stores.runs.get_metric_history(r, "m", max_points=50)
    assert_shape(got, points, 50)
    shown = {m.step: m.value for m in got}
    assert shown[2_000] == INF and shown[8_000] == -INF
    assert math.isnan(shown[5_000])  # the bucket's first NaN stands for its NaNs
    assert same(got, reference_downsample(points, 50))
    # a history of NaNs only: first, last, and each bucket's first NaN
    r2 = new_run(stores)
    nans = [Metric("m", NAN, i, 0) for i in range(500)]
    log(stores, r2, nans)
    got = stores.runs.get_metric_history(r2, "m", max_points=20)
    assert all(math.isnan(m.value) for m in got) and len(got) <= 20
    assert same(got, reference_downsample(nans, 20))


def test_a_short_history_comes_back_whole_and_exact(stores: SqlStores) -> None:
    r = new_run(stores)
    points = [Metric("m", v, s, t) for v, s, t in
              [(0.1, 5, 9), (NAN, 1, 2), (INF, 1, 1), (-0.0, 1, 1), (5e-324, -4, 0),
               (2.0, INT64[1], INT64[0]), (3.0, INT64[0], INT64[1])]]
    log(stores, r, points)
    full = stores.runs.get_metric_history(r, "m")
    assert len(full) == len(points)
    assert [m.step for m in full] == sorted(m.step for m in points)
    for max_points in (len(points), len(points) + 1, 100_000):
        assert same(stores.runs.get_metric_history(r, "m", max_points=max_points), full)
    assert same(stores.runs.get_metric_history(r, "m", max_points=len(points) - 1),
                reference_downsample(full, len(points) - 1))


def test_unknown_run_and_unknown_key(stores: SqlStores) -> None:
    with pytest.raises(RunNotFound):
        stores.runs.get_metric_history(uuid.uuid4().hex, "m", max_points=10)
    with pytest.raises(RunNotFound):
        stores.runs.iter_metric_history(uuid.uuid4().hex, "m")  # at the call, not later
    r = new_run(stores)
    assert stores.runs.get_metric_history(r, "never", max_points=10) == []
    assert list(stores.runs.iter_metric_history(r, "never")) == []


def test_other_keys_and_runs_do_not_leak_in(stores: SqlStores) -> None:
    a, b = new_run(stores), new_run(stores)
    log(stores, a, [Metric("m", float(i), i, 0) for i in range(300)]
        + [Metric("other", 1e9, i, 0) for i in range(300)])
    log(stores, b, [Metric("m", -1e9, i, 0) for i in range(300)])
    got = stores.runs.get_metric_history(a, "m", max_points=10)
    assert all(0 <= m.value < 300 and m.key == "m" for m in got)


# ---------------------------------------------------------------------- the rule, exactly

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1.0, NAN, INF, -INF]),  # many ties
)
steps = st.one_of(st.integers(-3, 40), st.integers(*INT64))
point = st.tuples(values, steps, st.integers(0, 3))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.lists(point, max_size=600),
       max_points=st.one_of(st.integers(2, 60), st.integers(130, 400)))  # one and two readers
def test_the_sql_answer_equals_the_reference(
    stores: SqlStores, data: list[tuple[float, int, int]], max_points: int
) -> None:
    r = new_run(stores)
    log(stores, r, [Metric("m", v, s, t) for v, s, t in data])
    full = stores.runs.get_metric_history(r, "m")
    got = stores.runs.get_metric_history(r, "m", max_points=max_points)
    assert same(got, reference_downsample(full, max_points))
    if full:
        assert_shape(got, full, max_points)


# ---------------------------------------------------------------------- streaming pages


def test_pages_hold_the_full_history_in_order(stores: SqlStores) -> None:
    r = new_run(stores)
    # many points share (step, timestamp): the keyset must continue after the id, too
    points = [Metric("m", float(i), i // 7, (i // 3) % 2) for i in range(1_000)]
    points += [Metric("m", NAN, 5, 0), Metric("m", -INF, INT64[0], INT64[1])]
    log(stores, r, points[::-1])
    full = stores.runs.get_metric_history(r, "m")
    for page_size in (1, 7, 64, 5_000):
        pages = list(stores.runs.iter_metric_history(r, "m", page_size=page_size))
        assert all(0 < len(p) <= page_size for p in pages)
        flat = [Metric("m", v, s, t) for p in pages
                for s, t, v in zip(p.steps, p.timestamps, p.values, strict=True)]
        assert same(flat, full)
        assert len(flat) == len(points)


def test_a_stream_is_the_history_as_its_first_page_was_read(
        stores: SqlStores, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks are fetched while the pages are consumed, in later transactions; writes in
    between, even ones that pack the rows the stream had read into a new chunk, neither add
    nor repeat nor drop a point."""
    from modelyard.stores.sql import history

    monkeypatch.setattr(history, "FETCH_POINTS", 1_000)  # several fetches for this history
    r = new_run(stores)
    log(stores, r, [Metric("m", 0.0, i, 0) for i in range(6_000)])  # chunks
    log(stores, r, [Metric("m", 1.0, 6_000 + i, 0) for i in range(100)])  # rows
    pages = stores.runs.iter_metric_history(r, "m", page_size=700)
    first = next(pages)
    log(stores, r, [Metric("m", 2.0, 7_000 + i, 0) for i in range(5_000)])  # packs the rows
    steps = [int(x) for p in [first, *pages] for x in p.steps]
    assert steps == list(range(6_100))
    again = [int(x) for p in stores.runs.iter_metric_history(r, "m") for x in p.steps]
    assert again == [*range(6_100), *range(7_000, 12_000)]


def test_many_downsamples_at_once_share_the_pool_without_deadlock(stores: SqlStores) -> None:
    """Each large downsample may take a second connection; many at once must neither wait
    on each other for the pool (a 30 s PoolTimeout) nor answer differently."""
    from concurrent.futures import ThreadPoolExecutor

    r = new_run(stores)
    points = [Metric("m", math.sin(i / 50) + (i % 7) / 10, i, i) for i in range(5_000)]
    log(stores, r, points)
    expected = reference_downsample(points, 400)

    def one(_: int) -> bool:
        return same(stores.runs.get_metric_history(r, "m", max_points=400), expected)

    with ThreadPoolExecutor(max_workers=24) as pool:
        assert all(pool.map(one, range(72)))
