"""A history of two million points streams through a real server process (CSV and Arrow) with
the server's memory bounded, and comes out complete and exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import LogBatch, Metric
from modelyard.domain.history import HistoryFormat
from modelyard.stores.sql import open_sql_stores
from support.memory import PeakRss
from support.servers import free_port, wait_healthy

POINTS = 2_000_000
BUDGET = 64 * 1024 * 1024  # server RSS growth allowed while streaming (2M points ≈ 48 MB raw)
DOWNSAMPLE_BUDGET = 32 * 1024 * 1024


def value(i: int) -> float:
    return (i % 1000) / 7.0 - 50.0


@pytest.mark.slow
def test_two_million_points_stream_with_bounded_server_memory(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    stores = open_sql_stores(f"sqlite:///{data / 'modelyard.db'}")
    run_id = "ab" * 16
    try:
        stores.runs.create_run(run_id=run_id, experiment_id="0", run_name="big", user_id="u",
                               start_time=0, tags={}, parent_run_id=None)
        for start in range(0, POINTS, 10_000):
            points = tuple(Metric("loss", value(i), i, 1_000 + i)
                           for i in range(start, start + 10_000))
            stores.runs.log_batch(run_id, LogBatch(metrics=points), batch_id=None)
    finally:
        stores.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli.main", "server", "--port", str(port),
         "--data-dir", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = RemoteBackend(url)
    try:
        wait_healthy(url, server)
        # warm up: the first export imports pyarrow, which is not what is measured
        client.export_metric_history(run_id, "nothing", tmp_path / "w", format=HistoryFormat.CSV)
        assert len(client.get_metric_history(run_id, "loss", max_points=1000)) <= 1000
        baseline = psutil.Process(server.pid).memory_info().rss
        arrow, csv = tmp_path / "h.arrow", tmp_path / "h.csv"
        with PeakRss(server.pid) as peak:
            client.export_metric_history(run_id, "loss", arrow, format=HistoryFormat.ARROW)
            client.export_metric_history(run_id, "loss", csv, format=HistoryFormat.CSV)
        assert peak.peak - baseline < BUDGET, f"server grew {(peak.peak - baseline) >> 20} MiB"
        # Downsampling reads the history a fetch at a time too: far less than its 48 MB.
        with PeakRss(server.pid) as peak:
            curve = client.get_metric_history(run_id, "loss", max_points=2000)
        assert len(curve) <= 2000 and curve[-1].step == POINTS - 1
        assert peak.peak - baseline < DOWNSAMPLE_BUDGET, (
            f"server grew {(peak.peak - baseline) >> 20} MiB while downsampling")
    finally:
        client.close()
        server.terminate()
        server.wait(10)

    table = pa.ipc.open_stream(arrow.read_bytes()).read_all()
    assert table.num_rows == POINTS
    steps = table.column("step").to_pylist()
    assert steps == list(range(POINTS))
    assert table.column("timestamp").to_pylist()[-1] == 1_000 + POINTS - 1
    assert table.column("value").to_pylist()[::9973] == [value(i)
                                                         for i in range(0, POINTS, 9973)]
    with csv.open() as f:
        assert next(f) == "step,timestamp,value\n"
        count = 0
        for count, line in enumerate(f, 1):
            if count % 99_991 == 0:
                s, t, v = line.split(",")
                assert (int(s), int(t), float(v)) == (count - 1, 999 + count, value(count - 1))
    assert count == POINTS
