"""CLI fixtures: a real embedded data folder with runs written by the SDK.

The SDK writes the runs once per session into a template folder; each test gets its own copy
(the SQLite file checkpointed first, so the copy is complete), which keeps the suite fast.
(tests/cli is a package so that this conftest does not shadow tests/conftest.py's module.)
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

import modelyard
from support.cli import Data


def _write_runs(uri: str) -> Data:
    """Experiment 'e' with three finished runs (lr 0.1/0.2/0.3, acc 0.8/0.9/0.95 at step 1,
    loss only on r1 and r2, tag team=a) and experiment 'other' with one run (o1)."""
    modelyard.set_uri(uri)
    d = Data(uri)
    for name, lr, acc in (("r1", 0.1, 0.8), ("r2", 0.2, 0.9), ("r3", 0.3, 0.95)):
        with modelyard.start_run(experiment="e", name=name, params={"lr": lr, "layers": 2},
                                 tags={"team": "a"}, capture_source=False) as run:
            run.log_metric("acc", acc / 2, step=0)
            run.log_metric("acc", acc, step=1)
            if name != "r3":
                run.log_metric("loss", 1 - acc)
        d.runs[name] = run.id
    with modelyard.start_run(experiment="other", name="o1", params={"depth": 5},
                             capture_source=False) as run:
        run.log_metric("auc", 0.7)
    d.runs["o1"] = run.id
    return d


@pytest.fixture(scope="session")
def data_template(tmp_path_factory: pytest.TempPathFactory) -> Data:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELYARD_CAPTURE_SOURCE", "false")
        template = _write_runs(str(tmp_path_factory.mktemp("template") / "data"))
    conn = sqlite3.connect(Path(template.uri) / "modelyard.db")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "could not checkpoint the template database"
    finally:
        conn.close()
    return template


@pytest.fixture
def data(data_template: Data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Data:
    """A private copy of the template data folder; the SDK points at it."""
    monkeypatch.setenv("MODELYARD_CAPTURE_SOURCE", "false")
    monkeypatch.delenv("MODELYARD_URI", raising=False)
    uri = tmp_path / "data"
    shutil.copytree(data_template.uri, uri, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    modelyard.set_uri(str(uri))
    return replace(data_template, uri=str(uri), runs=dict(data_template.runs))
