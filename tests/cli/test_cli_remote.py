"""The CLI commands of issue 11 against a server (real HTTP) on SQLite and PostgreSQL: counting,
searching with ``or``/``not``/``IS NULL``, metric histories, restoring under a new name, and
garbage collection through the server."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from support.cli import Data


def test_issue_11_commands_through_a_server(server: Any, tmp_path: Path) -> None:
    import modelyard
    from modelyard.backend.remote import RemoteBackend
    from modelyard.client import api

    data = Data(server.url)
    remote = RemoteBackend(server.url)
    real_backend = api.backend
    api.backend = lambda uri=None: remote  # type: ignore[assignment]
    try:
        ids = {}
        for name, lr, acc in (("a", "0.1", 0.9), ("b", None, 0.5), ("c", "0.2", 0.7)):
            with modelyard.start_run(experiment="remote-cli", name=name,
                                     params={} if lr is None else {"lr": lr}) as run:
                for step in range(3_000):  # enough for a packed chunk
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
                run.log_metric("acc", acc)
            ids[name] = run.id
    finally:
        api.backend = real_backend  # type: ignore[assignment]
        remote.close()

    flt = "params.lr IS NULL or (metrics.acc > 0.8 and not params.lr = '0.2')"
    listed = json.loads(data.ok("runs", "list", "-e", "remote-cli", "--filter", flt,
                                "--json").stdout)
    assert {r["run_name"] for r in listed} == {"a", "b"}
    assert data.ok("runs", "count", "-e", "remote-cli", "--filter", flt).stdout.strip() == "2"

    table = data.ok("runs", "history", ids["a"], "loss", "--max-points", "50").stdout
    assert "2999" in table  # the last point is kept
    full = data.ok("runs", "history", ids["a"], "loss", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(full)))
    assert rows[0] == ["step", "timestamp", "value"] and len(rows) == 3_001
    assert [int(r[0]) for r in rows[1:]] == list(range(3_000))

    old = data.ok("experiments", "create", "remote-reuse").stdout.strip()
    data.ok("experiments", "delete", "remote-reuse")
    new = data.ok("experiments", "create", "remote-reuse").stdout.strip()
    message = data.error("experiments", "restore", old)
    assert "--new-name" in message and f"id {new}" in message
    out = data.ok("experiments", "restore", old, "--new-name", "remote-reuse-old").stdout
    assert f"restored experiment {old}" in out

    data.ok("runs", "delete", ids["b"])
    time.sleep(0.01)  # a clock tick, not an event to wait for: deleted strictly before "now"
    dry = json.loads(data.ok("gc", "--older-than", "0s", "--json").stdout)
    assert dry["dry_run"] and dry["runs"] == [ids["b"]]
    done = data.ok("gc", "--older-than", "0s", "--no-dry-run")
    assert "purged 1 run and 0 experiments" in done.stdout
    assert "RUN_NOT_FOUND" in data.error("runs", "show", ids["b"])
    assert "not both" in data.error("gc", "--data-dir", str(tmp_path))
    # --uri means what it means everywhere: a folder is a data folder, which must exist
    missing = tmp_path / "no-such-folder"
    assert "no modelyard data folder" in Data(str(missing)).error("gc")
    assert not missing.exists()
