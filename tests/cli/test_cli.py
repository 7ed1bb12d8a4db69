"""``modelyard experiments`` and ``modelyard runs`` against a real embedded data folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from modelyard.cli.runs import data_columns
from modelyard.domain.entities import LifecycleStage, Run, RunInfo, RunStatus
from support.cli import Data

# ---------------------------------------------------------------------- experiments


def test_experiments_list_table_and_json(data: Data) -> None:
    table = data.ok("experiments", "list").stdout
    assert "Default" in table and " e " in table and "other" in table
    listed = json.loads(data.ok("experiments", "list", "--json").stdout)
    assert [e["name"] for e in listed] == ["Default", "e", "other"]
    assert set(listed[1]) >= {"experiment_id", "name", "description", "lifecycle_stage",
                              "creation_time", "tags"}
    assert listed[1]["lifecycle_stage"] == "active"


def test_experiments_create_delete_restore(data: Data) -> None:
    exp_id = data.ok("experiments", "create", "fresh", "--description", "about [bold]x").stdout
    assert exp_id.strip().isdigit()
    exp_id = exp_id.strip()
    listed = json.loads(data.ok("experiments", "list", "--json").stdout)
    assert {"experiment_id": exp_id, "name": "fresh"}.items() <= next(
        e for e in listed if e["name"] == "fresh").items()
    assert "about [bold]x" in data.ok("experiments", "list").stdout  # no markup applied

    assert "already" in data.error("experiments", "create", "fresh").lower()

    out = data.ok("experiments", "delete", "fresh").stdout
    assert f"deleted experiment {exp_id}" in out
    active = json.loads(data.ok("experiments", "list", "--json").stdout)
    assert "fresh" not in [e["name"] for e in active]
    deleted = json.loads(data.ok("experiments", "list", "--view", "deleted_only",
                                 "--json").stdout)
    assert [e["name"] for e in deleted] == ["fresh"]
    assert deleted[0]["lifecycle_stage"] == "deleted"

    assert f"restored experiment {exp_id}" in data.ok("experiments", "restore", exp_id).stdout
    names = [e["name"] for e in json.loads(data.ok("experiments", "list", "--json").stdout)]
    assert "fresh" in names


def test_a_deleted_experiments_name_can_be_reused_and_restored_renamed(data: Data) -> None:
    old = data.ok("experiments", "create", "reuse").stdout.strip()
    data.ok("experiments", "delete", "reuse")
    new = data.ok("experiments", "create", "reuse").stdout.strip()
    assert new != old
    # by name, restore means the deleted one; its name is taken, and the error says what to do
    message = data.error("experiments", "restore", "reuse")
    assert "--new-name" in message and f"id {new}" in message
    out = data.ok("experiments", "restore", "reuse", "--new-name", "reuse-2025").stdout
    assert f"restored experiment {old}" in out and "reuse-2025" in out
    listed = {e["name"]: e["experiment_id"]
              for e in json.loads(data.ok("experiments", "list", "--json").stdout)}
    assert listed["reuse"] == new and listed["reuse-2025"] == old
    assert "already" in data.error("experiments", "restore", old, "--new-name", "x").lower()


def test_deleting_an_experiment_deletes_its_runs(data: Data) -> None:
    data.ok("experiments", "delete", "other")
    ids = [r["run_id"] for r in json.loads(data.ok("runs", "list", "--json").stdout)]
    assert data.runs["o1"] not in ids
    gone = json.loads(data.ok("runs", "list", "--view", "deleted_only", "--json").stdout)
    assert [r["run_id"] for r in gone] == [data.runs["o1"]]


def test_experiment_errors(data: Data) -> None:
    assert "'nope'" in data.error("experiments", "delete", "nope")
    assert "999" in data.error("experiments", "restore", "999")
    assert "already active" in data.error("experiments", "restore", "e")
    assert "--view" in data.error("experiments", "list", "--view", "sideways")


def test_missing_data_folder_is_refused_not_created(data: Data, tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    message = data.error("runs", "list", "--uri", str(missing), uri=False)
    assert "no modelyard data folder" in message and "typo" in message
    assert not missing.exists()
    data.ok("experiments", "create", "new", "--uri", str(missing), uri=False)
    assert missing.is_dir()


# ---------------------------------------------------------------------- runs list


def test_runs_list_table(data: Data) -> None:
    out = data.ok("runs", "list").stdout
    header = re.split(r"\s{2,}", out.splitlines()[0].strip())
    # metrics are headed by their key, params and tags by params.KEY and tags.KEY
    assert header == ["run id", "name", "status", "start", "experiment", "acc", "loss", "auc",
                      "params.layers", "params.lr", "params.depth"]
    for name, run_id in data.runs.items():
        line = next(line for line in out.splitlines() if run_id in line)
        assert name in line and "FINISHED" in line
    r3 = next(line for line in out.splitlines() if data.runs["r3"] in line)
    assert "0.95" in r3 and "0.3" in r3


def test_runs_list_json_filter_order_and_limit(data: Data) -> None:
    runs = json.loads(data.ok("runs", "list", "--experiment", "e", "--json").stdout)
    assert {r["run_name"] for r in runs} == {"r1", "r2", "r3"}
    r2 = next(r for r in runs if r["run_name"] == "r2")
    assert r2["params"] == {"layers": "2", "lr": "0.2"}
    assert r2["metrics"] == {"acc": 0.9, "loss": 1 - 0.9}
    assert r2["tags"] == {"team": "a"}
    assert r2["status"] == "FINISHED" and r2["lifecycle_stage"] == "active"
    assert isinstance(r2["start_time"], int)

    found = json.loads(data.ok("runs", "list", "-e", "e", "--filter",
                               "metrics.acc > 0.85 and (params.lr = '0.2' or params.lr = '0.3')",
                               "--order-by", "metrics.acc DESC", "--json").stdout)
    assert [r["run_name"] for r in found] == ["r3", "r2"]

    first = data.cli("runs", "list", "-e", "e", "--order-by", "metrics.acc ASC", "--order-by",
                     "attributes.start_time", "--max-results", "1", "--json")
    assert first.exit_code == 0, first.output
    assert [r["run_name"] for r in json.loads(first.stdout)] == ["r1"]
    assert "first 1 of 3 matching runs" in first.stderr


def test_runs_count_and_the_experiment_column(data: Data) -> None:
    assert data.ok("runs", "count").stdout.strip() == "4"  # every experiment
    assert data.ok("runs", "count", "-e", "e", "--filter", "metrics.acc > 0.85").stdout == "2\n"
    assert json.loads(data.ok("runs", "count", "-e", "e", "-e", "other",
                              "--json").stdout) == {"count": 4}
    assert data.ok("runs", "count", "--filter", "metrics.acc > 5").stdout.strip() == "0"
    assert "position" in data.error("runs", "count", "--filter", "metrics.acc >")
    assert "'ghost'" in data.error("runs", "count", "-e", "ghost")
    # runs from several experiments: the table says which one each is in
    header = data.ok("runs", "list").stdout.splitlines()[0]
    assert "experiment" in header
    assert "experiment" not in data.ok("runs", "list", "-e", "e").stdout.splitlines()[0]


def test_runs_list_by_experiment_id_and_empty(data: Data) -> None:
    exp_id = json.loads(data.ok("runs", "list", "-e", "other", "--json").stdout)[0][
        "experiment_id"]
    by_id = json.loads(data.ok("runs", "list", "-e", exp_id, "--json").stdout)
    assert [r["run_name"] for r in by_id] == ["o1"]
    assert "no runs match" in data.ok("runs", "list", "--filter", "metrics.acc > 5").stdout
    assert json.loads(data.ok("runs", "list", "--filter", "metrics.acc > 5",
                              "--json").stdout) == []


def test_runs_list_errors(data: Data) -> None:
    message = data.error("runs", "list", "--filter", "metrics.acc >> 0.5")
    assert "position" in message and "INVALID_FILTER" in message
    assert "position" in data.error("runs", "list", "--order-by", "metrics.acc sideways")
    assert "'ghost'" in data.error("runs", "list", "--experiment", "ghost")
    assert "--view" in data.error("runs", "list", "--view", "some")
    assert "max_results" in data.error("runs", "list", "--max-results", "0")


def test_data_columns_prefers_what_was_asked_and_caps_at_six() -> None:
    info = RunInfo("a" * 32, "1", "n", "u", RunStatus.FINISHED, 0, None, LifecycleStage.ACTIVE)
    from modelyard.domain.entities import Metric

    run = Run(info, params={f"p{i}": "x" for i in range(5)},
              latest_metrics={f"m{i}": Metric(f"m{i}", 1.0, 0, 0) for i in range(5)})
    cols = data_columns([run])
    assert cols == ["metrics.m0", "metrics.m1", "metrics.m2", "params.p0", "params.p1",
                    "params.p2"]
    from modelyard.domain.search import parse_order_by

    preferred = [k.field for k in parse_order_by(["params.p4 DESC"])]
    assert data_columns([run], preferred)[0] == "params.p4"
    assert len(data_columns([run], preferred)) == 6


# ---------------------------------------------------------------------- show / compare


def test_runs_show(data: Data) -> None:
    run_id = data.runs["r2"]
    out = data.ok("runs", "show", run_id).stdout
    for text in (run_id, "r2", "FINISHED", "params", "lr", "0.2", "metrics", "acc", "0.9",
                 "(step 1)", "tags", "team"):
        assert text in out
    shown = json.loads(data.ok("runs", "show", run_id, "--json").stdout)
    assert shown["run_id"] == run_id and shown["run_name"] == "r2"
    assert shown["params"] == {"layers": "2", "lr": "0.2"}
    assert shown["metrics"]["acc"]["value"] == 0.9 and shown["metrics"]["acc"]["step"] == 1
    assert shown["tags"] == {"team": "a"}


def test_runs_compare(data: Data) -> None:
    ids = [data.runs["r1"], data.runs["r3"]]
    result = json.loads(data.ok("runs", "compare", *ids, "--json").stdout)
    assert [r["run_id"] for r in result["runs"]] == ids
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {"params.layers", "params.lr", "metrics.acc", "metrics.loss"}
    assert rows["params.layers"]["differs"] is False
    assert rows["params.lr"] == {"key": "params.lr", "values": {ids[0]: "0.1", ids[1]: "0.3"},
                                 "differs": True}
    assert rows["metrics.loss"]["values"][ids[1]] is None and rows["metrics.loss"]["differs"]

    table = data.ok("runs", "compare", *ids).stdout
    assert ids[0] in table and ids[1] in table and "r1" in table and "r3" in table
    lines = table.splitlines()
    assert any(line.strip().startswith("* params.lr") for line in lines)
    layers = next(line for line in lines if "params.layers" in line)
    assert not layers.strip().startswith("*")
    assert "-" in next(line for line in lines if "metrics.loss" in line)

    assert "at least two" in data.error("runs", "compare", ids[0])
    assert "b" * 32 in data.error("runs", "compare", ids[0], "b" * 32)


# ---------------------------------------------------------------------- delete / restore


def test_runs_delete_and_restore(data: Data) -> None:
    run_id = data.runs["r1"]
    assert f"deleted run {run_id}" in data.ok("runs", "delete", run_id).stdout
    active = [r["run_id"] for r in json.loads(data.ok("runs", "list", "--json").stdout)]
    assert run_id not in active and len(active) == 3
    deleted = json.loads(data.ok("runs", "list", "--view", "deleted_only", "--json").stdout)
    assert [r["run_id"] for r in deleted] == [run_id]
    every = json.loads(data.ok("runs", "list", "--view", "all", "--json").stdout)
    assert len(every) == 4
    assert f"restored run {run_id}" in data.ok("runs", "restore", run_id).stdout
    assert len(json.loads(data.ok("runs", "list", "--json").stdout)) == 4


def test_unknown_run_ids_are_named_in_one_line(data: Data) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    for command in (["runs", "show"], ["runs", "delete"], ["runs", "restore"],
                    ["artifacts", "list"]):
        message = data.error(*command, unknown)
        assert unknown in message and "RUN_NOT_FOUND" in message
        malformed = data.error(*command, "not-a-run")
        assert "'not-a-run'" in malformed and "32" in malformed
