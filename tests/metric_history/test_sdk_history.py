"""Metric histories through the public SDK, embedded and over a real server, on both databases:
downsampling, the exports (CSV and Arrow round-trip exactly) and the errors."""

from __future__ import annotations

import csv
import math
import random
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from modelyard.domain.entities import Metric
from modelyard.errors import InvalidArgument, RunNotFound
from support.downsampling import reference_downsample

NAN, INF = math.nan, math.inf
VALUES = [0.1, 1 / 3, NAN, INF, -INF, -0.0, 5e-324, 1.7976931348623157e308,
          123456789.123456789, 1e22, -2.5e-300]


def _log(sdk: Any, points: list[Metric]) -> str:
    with sdk.start_run(experiment="history") as run:
        for m in points:
            run.log_metric(m.key, m.value, step=m.step, timestamp=m.timestamp)
    return str(run.id)


def _same(a: list[Metric], b: list[Metric]) -> bool:
    def k(m: Metric) -> tuple[int, int, object]:
        return (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
    return [k(m) for m in a] == [k(m) for m in b]


def _points(n: int, seed: int = 1) -> list[Metric]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v = rng.choice(VALUES) if rng.random() < 0.05 else rng.gauss(0, 1)
        out.append(Metric("loss", v, i // 2, 1_700_000_000_000 + i))
    return out


def test_downsampled_history_matches_the_rule(sdk: Any) -> None:
    points = _points(3_000)
    points[1_500] = Metric("loss", 1e6, 750, 1_700_000_001_500)  # a spike
    run_id = _log(sdk, points)
    full = sdk.get_metric_history(run_id, "loss")
    assert _same(full, points)  # logged in history order already
    for max_points in (2, 3, 10, 500, 2_999):
        got = sdk.get_metric_history(run_id, "loss", max_points=max_points)
        assert _same(got, reference_downsample(full, max_points)), max_points
        assert len(got) <= max_points
        assert [m.step for m in got] == sorted(m.step for m in got)
        assert all(m.key == "loss" for m in got)
    clean = [Metric("loss", 1 / (i + 1), i, i) for i in range(2_000)]
    clean[1_234] = Metric("loss", 1e6, 1_234, 1_234)
    spiky = _log(sdk, clean)
    assert clean[1_234] in sdk.get_metric_history(spiky, "loss", max_points=10)
    assert _same(sdk.get_metric_history(run_id, "loss", max_points=3_000), full)
    assert _same(sdk.get_metric_history(run_id, "loss", max_points=100_000), full)


@pytest.mark.parametrize("bad", [0, 1, -5, 100_001, 10**30, True, 2.5, "10"])
def test_bad_max_points_is_refused_naming_the_field(sdk: Any, bad: object) -> None:
    run_id = _log(sdk, _points(5))
    with pytest.raises(InvalidArgument) as exc:
        sdk.get_metric_history(run_id, "loss", max_points=bad)
    assert exc.value.field == "max_points"
    assert "max_points" in exc.value.message


def test_unknown_run_and_key(sdk: Any, tmp_path: Path) -> None:
    unknown = uuid.uuid4().hex
    with pytest.raises(RunNotFound):
        sdk.get_metric_history(unknown, "loss", max_points=10)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RunNotFound):
        sdk.export_metric_history(unknown, "loss", out / "x.csv")
    assert list(out.iterdir()) == []  # no file, no temp file left behind either
    run_id = _log(sdk, _points(5))
    assert sdk.get_metric_history(run_id, "nope", max_points=10) == []
    empty = sdk.export_metric_history(run_id, "nope", tmp_path / "empty.csv")
    assert empty.read_text() == "step,timestamp,value\n"
    table = pa.ipc.open_stream(
        sdk.export_metric_history(run_id, "nope", tmp_path / "e.arrow", format="arrow")
        .read_bytes()).read_all()
    assert table.num_rows == 0 and table.column_names == ["step", "timestamp", "value"]
    with pytest.raises(InvalidArgument) as exc:
        sdk.get_metric_history(run_id, "bad key!", max_points=10)
    assert exc.value.field == "key"


def test_exports_round_trip_exactly(sdk: Any, tmp_path: Path) -> None:
    points = [Metric("loss", v, s, t) for v, s, t in zip(
        VALUES * 20, range(-5, 10**6, 4_000), range(len(VALUES) * 20), strict=False)]
    points.append(Metric("loss", 7.0, 2**63 - 1, -(2**63)))
    run_id = _log(sdk, points)
    full = sdk.get_metric_history(run_id, "loss")
    assert len(full) == len(points)

    path = sdk.export_metric_history(run_id, "loss", tmp_path / "h.csv")
    assert path == tmp_path / "h.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "timestamp", "value"]
    back = [Metric("loss", float(v), int(s), int(t)) for s, t, v in rows[1:]]
    assert _same(back, full)
    assert all(math.copysign(1, a.value) == math.copysign(1, b.value)
               for a, b in zip(back, full, strict=True) if not math.isnan(a.value))

    arrow = sdk.export_metric_history(run_id, "loss", tmp_path / "h.arrow", format="arrow")
    reader = pa.ipc.open_stream(arrow.read_bytes())
    assert reader.schema.metadata == {b"key": b"loss"}
    table = reader.read_all()
    assert table.schema.types == [pa.int64(), pa.int64(), pa.float64()]
    assert table.column("value").null_count == 0  # NaN is a NaN, never a null
    back = [Metric("loss", v, s, t) for s, t, v in zip(
        table.column("step").to_pylist(), table.column("timestamp").to_pylist(),
        table.column("value").to_pylist(), strict=True)]
    assert _same(back, full)


def test_export_refuses_bad_format_and_a_directory(sdk: Any, tmp_path: Path) -> None:
    run_id = _log(sdk, _points(5))
    for bad in ("parquet", "CSV", ""):
        with pytest.raises(InvalidArgument) as exc:
            sdk.export_metric_history(run_id, "loss", tmp_path / "x", format=bad)
        assert exc.value.field == "format"
    with pytest.raises(InvalidArgument) as exc:
        sdk.export_metric_history(run_id, "loss", tmp_path)
    assert exc.value.field == "dest"
    nested = sdk.export_metric_history(run_id, "loss", tmp_path / "a" / "b" / "h.csv")
    assert nested.read_text().count("\n") == 6
