"""``modelyard gc`` on a real data folder: what it reports, what it frees, what it keeps."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from modelyard.cli.gc import DRY_RUN_NOTE, parse_duration
from modelyard.errors import InvalidArgument
from support.cli import Data
from support.waiting import wait_until


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _put(data: Data, run_id: str, files: dict[str, bytes], tmp: Path) -> None:
    src = tmp / f"src-{run_id}"
    src.mkdir()
    for name, content in files.items():
        (src / name).write_bytes(content)
    data.ok("artifacts", "put", run_id, str(src))


@pytest.mark.parametrize(("text", "ms"), [
    ("0s", 0), ("500ms", 500), ("90m", 90 * 60_000), ("12h", 12 * 3_600_000),
    ("30d", 30 * 86_400_000), ("2w", 14 * 86_400_000), ("1d12h", 36 * 3_600_000),
    (" 7D ", 7 * 86_400_000),
])
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "30", "-1d", "1.5h", "d", "3 days", "12h!", "1y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not a duration"):
        parse_duration(text)


def test_gc_frees_exactly_the_deleted_runs_unique_blobs(data: Data, tmp_path: Path) -> None:
    shared = os.urandom(500)
    u1, u2, u3, u4 = (os.urandom(n) for n in (1000, 2000, 3000, 4000))
    _put(data, data.runs["r1"], {"u1.bin": u1, "shared.bin": shared}, tmp_path)
    _put(data, data.runs["r2"], {"u2.bin": u2, "shared.bin": shared}, tmp_path)
    _put(data, data.runs["r3"], {"u3.bin": u3}, tmp_path)
    _put(data, data.runs["o1"], {"u4.bin": u4}, tmp_path)
    other_id = json.loads(data.ok("runs", "list", "-e", "other", "--json").stdout)[0][
        "experiment_id"]
    data.ok("runs", "delete", data.runs["r1"])
    data.ok("experiments", "delete", "other")  # deletes o1 with it
    time.sleep(0.01)  # a clock tick, not an event to wait for: deleted strictly before "now"

    blobs = Path(data.uri) / "artifacts"
    gc = ("gc", "--data-dir", data.uri)
    before = _disk_bytes(blobs)

    # What hangs off r1 and o1 (see conftest._write_runs, plus the files put above): r1 has
    # params lr+layers, acc at steps 0 and 1 and one loss point (latest: acc, loss), tag team
    # and two artifacts; o1 has param depth, one auc point and one artifact; one batch each.
    rows = {"runs": 2, "metrics": 4, "latest_metrics": 3, "params": 3, "tags": 1,
            "artifacts": 3, "ingested_batches": 2, "experiments": 1, "experiment_tags": 0,
            "metric_chunks": 0}

    # A dry run (the default) reports and changes nothing.
    result = data.ok(*gc, "--older-than", "0s", uri=False)
    out = result.stdout
    assert "would purge 2 runs and 1 experiment (19 rows: runs 2, metrics 4, latest_metrics 3" \
        in out
    assert data.runs["r1"] in out and data.runs["o1"] in out and f"experiment {other_id}" in out
    assert "would free 2 blobs (4.9 KiB)" in out
    assert "would sweep 0 abandoned uploads (0 B), 0 temp files (0 B) and 0 stale leases" in out
    assert DRY_RUN_NOTE in out
    audit = [line for line in result.stderr.splitlines() if line.startswith("audit: gc ")]
    assert len(audit) == 1
    logged = json.loads(audit[0].removeprefix("audit: gc "))
    assert logged["event"] == "gc" and logged["dry_run"] is True
    assert sorted(logged["runs"]) == sorted([data.runs["r1"], data.runs["o1"]])
    assert logged["rows"] == rows and logged["bytes_freed"] == 5000
    report = json.loads(data.ok(*gc, "--older-than", "0s", "--json", uri=False).stdout)
    assert sorted(report.pop("runs")) == sorted([data.runs["r1"], data.runs["o1"]])
    assert report == {"experiments": [other_id], "rows": rows, "rows_freed": 19, "blobs": 2,
                      "bytes_freed": 5000, "blobs_kept": 0, "uploads": 0, "upload_bytes": 0,
                      "temp_files": 0, "temp_bytes": 0, "leases": 0, "trash_settled": 0,
                      "total_bytes_freed": 5000, "dry_run": True}
    assert _disk_bytes(blobs) == before
    assert len(json.loads(data.ok("runs", "list", "--view", "all", "--json").stdout)) == 4

    # Deleted too recently for the default 30 days: nothing goes.
    kept = json.loads(data.ok(*gc, "--no-dry-run", "--json", uri=False).stdout)
    assert kept["runs"] == [] and kept["experiments"] == [] and kept["rows_freed"] == 0
    assert kept["blobs"] == 0 and kept["bytes_freed"] == 0 and kept["dry_run"] is False
    assert _disk_bytes(blobs) == before

    out = data.ok(*gc, "--older-than", "0s", "--no-dry-run", uri=False).stdout
    assert "purged 2 runs and 1 experiment (19 rows" in out and "freed 2 blobs (4.9 KiB)" in out
    assert DRY_RUN_NOTE not in out
    assert _disk_bytes(blobs) == before - len(u1) - len(u4)
    db = sqlite3.connect(Path(data.uri) / "modelyard.db")
    try:
        for table in ("runs", "metrics", "latest_metrics", "params", "tags", "artifacts"):
            left = db.execute(f"SELECT count(*) FROM {table} WHERE run_id IN (?, ?)",
                              (data.runs["r1"], data.runs["o1"])).fetchone()[0]
            assert left == 0, table
    finally:
        db.close()

    remaining = json.loads(data.ok("runs", "list", "--view", "all", "--json").stdout)
    assert {r["run_name"] for r in remaining} == {"r2", "r3"}
    names = {e["name"] for e in json.loads(data.ok("experiments", "list", "--view", "all",
                                                   "--json").stdout)}
    assert "other" not in names
    for run, expected in (("r2", {"u2.bin": u2, "shared.bin": shared}), ("r3", {"u3.bin": u3})):
        dest = tmp_path / f"down-{run}"
        data.ok("artifacts", "get", data.runs[run], ".", "--dest", str(dest))
        assert {p.name: p.read_bytes() for p in dest.iterdir()} == expected

    again = json.loads(data.ok(*gc, "--older-than", "0s", "--no-dry-run", "--json",
                               uri=False).stdout)
    assert again["runs"] == [] and again["blobs"] == 0


def test_gc_errors(data: Data, tmp_path: Path) -> None:
    message = data.error("gc", "--older-than", "30", "--data-dir", data.uri, uri=False)
    assert "'30'" in message and "not a duration" in message
    assert "not a duration" in data.error("gc", "--older-than", "soon", "--data-dir", data.uri,
                                          uri=False)
    assert "--abandoned-after 'x'" in data.error("gc", "--abandoned-after", "x", "--data-dir",
                                                  data.uri, uri=False)
    missing = tmp_path / "nowhere"
    assert "no modelyard database" in data.error("gc", "--data-dir", str(missing), uri=False)
    assert not missing.exists()


def _past_deletion(data: Data) -> None:
    """Wait for the clock to pass the last deletion (gc purges what was deleted strictly
    before now - --older-than)."""
    gone = json.loads(data.ok("runs", "list", "--view", "deleted_only", "--json").stdout)
    last = max(r["deleted_time"] for r in gone)
    wait_until(lambda: time.time() * 1000 > last + 1, timeout=5, interval=0.001,
               what="the clock to pass the last deletion")


def test_gc_uri_a_data_folder_is_embedded_mode(data: Data, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``gc --uri ./folder`` collects on that data folder, as ``runs list --uri ./folder``
    reads it: the same as ``--data-dir``, and MODELYARD_URI is its default as everywhere."""
    gone, kept = os.urandom(3000), os.urandom(1000)
    _put(data, data.runs["r1"], {"gone.bin": gone}, tmp_path)
    _put(data, data.runs["r2"], {"kept.bin": kept}, tmp_path)
    data.ok("runs", "delete", data.runs["r1"])
    _past_deletion(data)
    folder = Path(data.uri)
    monkeypatch.chdir(folder.parent)
    relative = f"./{folder.name}"
    blobs = folder / "artifacts"
    before = _disk_bytes(blobs)

    # dry runs: --uri ./folder reports exactly what --data-dir ./folder does
    by_uri = json.loads(data.ok("gc", "--older-than", "0s", "--json", "--uri", relative,
                                uri=False).stdout)
    by_dir = json.loads(data.ok("gc", "--older-than", "0s", "--json", "--data-dir", relative,
                                uri=False).stdout)
    assert by_uri == by_dir
    assert by_uri["dry_run"] and by_uri["runs"] == [data.runs["r1"]]
    assert by_uri["blobs"] == 1 and by_uri["bytes_freed"] == len(gone)
    assert data.runs["r1"] in data.ok("runs", "list", "--view", "deleted_only", "--uri",
                                      relative, uri=False).stdout  # the same folder
    assert _disk_bytes(blobs) == before

    # for real, with the folder from MODELYARD_URI, the default of --uri
    done = data.cli("gc", "--older-than", "0s", "--no-dry-run", uri=False,
                    env={"MODELYARD_URI": relative})
    assert done.exit_code == 0, done.output
    assert "purged 1 run and 0 experiments" in done.stdout
    assert "freed 1 blob (2.9 KiB)" in done.stdout
    assert _disk_bytes(blobs) == before - len(gone)
    db = sqlite3.connect(folder / "modelyard.db")
    try:
        left = db.execute("SELECT run_id FROM runs").fetchall()
    finally:
        db.close()
    assert data.runs["r1"] not in {r for (r,) in left} and data.runs["r2"] in {r for (r,) in left}
    dest = tmp_path / "down"
    data.ok("artifacts", "get", data.runs["r2"], "kept.bin", "--dest", str(dest))
    assert (dest / "kept.bin").read_bytes() == kept


def test_gc_uri_rules(data: Data, tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    assert "no modelyard data folder" in data.error("gc", "--uri", str(missing), uri=False)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    message = data.error("gc", "--uri", str(empty), uri=False)
    assert "no modelyard database" in message and "--uri" in message
    assert list(empty.iterdir()) == []  # refused, not given an empty database
    # --uri and the store flags on one command line: refused; MODELYARD_URI yields to them
    assert "not both" in data.error("gc", "--uri", data.uri, "--data-dir", data.uri, uri=False)
    report = data.ok("gc", "--data-dir", data.uri, "--json", uri=False,
                     env={"MODELYARD_URI": str(missing)}).stdout
    assert json.loads(report)["dry_run"] is True
    assert "no modelyard data folder" in data.error("gc", uri=False,
                                                    env={"MODELYARD_URI": str(missing)})
