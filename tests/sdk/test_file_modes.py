"""Downloaded and exported files get the mode of any file the user creates (0644 under umask
022, 0600 under 077), not tempfile.mkstemp's 0600 whatever the umask: embedded and over HTTP,
on each database, through the SDK's backends and the CLI."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelyard.backend.local import LocalBackend
from modelyard.cli.main import app as cli
from modelyard.domain.entities import LogBatch, Metric
from modelyard.domain.history import HistoryFormat
from modelyard.settings import Settings
from support.servers import ServerThread

UMASKS = [0o022, 0o077]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Umask:
    """Sets the process umask for the body of a with-block (it is process-wide: only around
    the calls under test, never across fixtures)."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.old = 0

    def __enter__(self) -> int:
        self.old = os.umask(self.value)
        return 0o666 & ~self.value

    def __exit__(self, *exc: object) -> None:
        os.umask(self.old)


def _run_with_data(backend: Any) -> str:
    run_id: str = backend.create_run("0").info.run_id
    metrics = tuple(Metric("loss", 1 / (i + 1), i, 1_000 + i) for i in range(50))
    backend.log_batch(run_id, LogBatch(metrics, (), ()))
    backend.upload_bytes(run_id, "model/weights.bin", b"w" * 10_000)
    return run_id


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    out.mkdir()
    yield out
    temps = [p.name for p in out.rglob("*") if p.name.startswith(".")]
    assert not temps, f"temp files left behind: {temps}"


@pytest.mark.parametrize("umask", UMASKS, ids=oct)
def test_downloads_and_exports_follow_the_umask(backend: Any, umask: int,
                                                no_leftovers: Path) -> None:
    run_id = _run_with_data(backend)
    out = no_leftovers
    with Umask(umask) as expected:
        backend.download_file(run_id, "model/weights.bin", out / "weights.bin")
        backend.download_file(run_id, "model/weights.bin", out / "deep" / "again.bin")
        for fmt in (HistoryFormat.CSV, HistoryFormat.ARROW):
            backend.export_metric_history(run_id, "loss", out / f"loss.{fmt.value}",
                                          format=fmt)
        # Replacing a file that exists gives it the same mode as a new one.
        (out / "old.bin").write_bytes(b"old")
        os.chmod(out / "old.bin", 0o600)
        backend.download_file(run_id, "model/weights.bin", out / "old.bin")
    for name in ("weights.bin", "deep/again.bin", "loss.csv", "loss.arrow", "old.bin"):
        assert mode(out / name) == expected, (name, oct(mode(out / name)), oct(expected))
    assert (out / "old.bin").read_bytes() == b"w" * 10_000


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("umask", UMASKS, ids=oct)
@pytest.mark.parametrize("where", ["embedded", "remote"])
def test_cli_downloads_and_exports_follow_the_umask(where: str, umask: int,
                                                    settings: Settings, tmp_path: Path,
                                                    no_leftovers: Path) -> None:
    local = LocalBackend(settings)
    try:
        run_id = _run_with_data(local)
    finally:
        local.close()
    out = no_leftovers

    def invoke(uri: str) -> None:
        with Umask(umask):
            for args in (["artifacts", "get", run_id, "model/weights.bin", "--dest",
                          str(out / "art")],
                         ["runs", "history", run_id, "loss", "--format", "json",
                          "--output", str(out / "loss.json")],
                         ["runs", "history", run_id, "loss", "--format", "csv",
                          "--output", str(out / "loss.csv")]):
                result = CliRunner().invoke(cli, [*args, "--uri", uri])
                assert result.exit_code == 0, result.output

    if where == "embedded":
        invoke(str(tmp_path))  # the settings' data folder: modelyard.db and artifacts/
    else:
        with ServerThread(settings) as srv:
            invoke(srv.url)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"weights.bin", "loss.json", "loss.csv"}
    for path in files:
        assert mode(path) == 0o666 & ~umask, (path, oct(mode(path)))
