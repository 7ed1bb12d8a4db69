"""``modelyard runs history`` against a real embedded data folder."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pyarrow as pa

import modelyard
from support.cli import Data


def _long_run(data: Data) -> str:
    modelyard.set_uri(data.uri)
    with modelyard.start_run(experiment="h", capture_source=False) as run:
        for i in range(2_000):
            run.log_metric("loss", 1 / (i + 1), step=i, timestamp=1_000 + i)
        run.log_metric("loss", math.nan, step=2_000, timestamp=9_999)
    return str(run.id)


def test_table_and_json(data: Data) -> None:
    r1 = data.runs["r1"]
    table = data.ok("runs", "history", r1, "acc").stdout
    assert "step" in table and "0.4" in table and "0.8" in table
    got = json.loads(data.ok("runs", "history", r1, "acc", "--format", "json").stdout)
    assert got["key"] == "acc" and got["steps"] == [0, 1] and got["values"] == [0.4, 0.8]


def test_max_points_downsamples(data: Data) -> None:
    run_id = _long_run(data)
    got = json.loads(data.ok("runs", "history", run_id, "loss", "-n", "50", "--format",
                             "json").stdout)
    assert len(got["steps"]) <= 50
    assert got["steps"][0] == 0 and got["steps"][-1] == 2_000 and got["values"][-1] == "NaN"
    out = data.ok("runs", "history", run_id, "loss", "--max-points", "10", "-f", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["step", "timestamp", "value"] and 2 < len(rows) <= 11


def test_csv_to_stdout_and_arrow_to_file(data: Data, tmp_path: Path) -> None:
    run_id = _long_run(data)
    out = data.ok("runs", "history", run_id, "loss", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))[1:]
    assert len(rows) == 2_001
    assert [float(v) for _, _, v in rows[:2_000]] == [1 / (i + 1) for i in range(2_000)]
    assert rows[-1] == ["2000", "9999", "nan"]
    dest = tmp_path / "sub" / "loss.arrow"
    data.ok("runs", "history", run_id, "loss", "--format", "arrow", "--output", str(dest))
    table = pa.ipc.open_stream(dest.read_bytes()).read_all()
    assert table.num_rows == 2_001 and table.column("step").to_pylist()[-1] == 2_000
    js = tmp_path / "h.json"
    data.ok("runs", "history", run_id, "loss", "-n", "5", "--format", "json", "-o", str(js))
    assert len(json.loads(js.read_text())["steps"]) <= 5


def test_errors_are_one_line(data: Data, tmp_path: Path) -> None:
    r1 = data.runs["r1"]
    assert "max_points" in data.error("runs", "history", r1, "acc", "--max-points", "1")
    assert "--format" in data.error("runs", "history", r1, "acc", "--format", "xml")
    assert "--output" in data.error("runs", "history", r1, "acc", "--format", "arrow")
    assert "--output" in data.error("runs", "history", r1, "acc", "-o", str(tmp_path / "x"))
    assert "directory" in data.error("runs", "history", r1, "acc", "-f", "csv", "-o",
                                     str(tmp_path))
    assert "f" * 32 in data.error("runs", "history", "f" * 32, "acc")
    assert "key" in data.error("runs", "history", r1, "bad key!")
    assert data.ok("runs", "history", r1, "never", "-f", "json").stdout.count('"steps": []') == 1
