"""``runs list`` reads at any width: on a real pseudo-terminal of 80 and of 120 columns every
line fits, every header is whole, no cell is cut to a character or two, and run ids are complete;
``--columns`` picks the columns and refuses unknown ones."""

from __future__ import annotations

import re
import sys

import pytest
from rich.text import Text
from typer.testing import CliRunner

import modelyard
from modelyard.cli.main import app
from modelyard.cli.runs_table import (
    SHRINK_MIN,
    RunColumn,
    fit_columns,
    metric_header,
    parse_columns,
)
from modelyard.errors import InvalidArgument
from support.cli import Data, on_a_terminal, terminal_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

LONG_NAME = "a-rather-long-run-name-for-a-narrow-table"
# Every header `runs list` may choose for the data of conftest._write_runs plus the long run.
HEADERS = {"run id", "name", "status", "start", "experiment", "acc", "loss", "auc",
           "params.lr", "params.layers", "params.depth"}


@pytest.fixture
def table_data(data: Data) -> Data:
    """The CLI data plus a run with a long name in experiment 'e'."""
    with modelyard.start_run(experiment="e", name=LONG_NAME, params={"lr": 0.05, "layers": 4},
                             capture_source=False) as run:
        run.log_metric("acc", 0.5)
        run.log_metric("loss", 0.25)
    data.runs[LONG_NAME] = run.id
    return data


def _cells(line: str) -> list[str]:
    """A table line's cells: the columns are two spaces or more apart."""
    return re.split(r"\s{2,}", line.strip())


def _table(data: Data, width: int, *args: str, columns_env: bool) -> tuple[list[str], list[str]]:
    """``runs list ARGS`` on a terminal ``width`` columns wide (told by COLUMNS as well when
    ``columns_env``, else by the terminal alone): the header cells and the lines."""
    env = terminal_env(**({"COLUMNS": str(width)} if columns_env else {}))
    code, lines = on_a_terminal("runs", "list", *args, "--uri", data.uri, columns=width, env=env)
    assert code == 0, "\n".join(lines)
    lines = [line for line in lines if line.strip()]
    too_wide = [line for line in lines if Text(line).cell_len > width]
    assert too_wide == [], f"wider than {width}: {too_wide}"
    return _cells(lines[0]), lines


def _check_readable(data: Data, header: list[str], lines: list[str], names: set[str]) -> None:
    assert header[:4] == ["run id", "name", "status", "start"], header
    assert set(header) <= HEADERS, f"cut or unknown headers: {set(header) - HEADERS}"
    rows = lines[1:]
    assert len(rows) == len(names), lines
    for name in names:
        run_id = data.runs[name]
        row = next((r for r in rows if r.startswith(run_id + "  ")), None)
        assert row is not None, f"no row starts with the whole id {run_id}: {lines}"
        cells = _cells(row)
        shown = cells[1]
        assert shown == name or (
            shown.endswith("…") and len(shown) >= SHRINK_MIN and name.startswith(shown[:-1])
        ), shown
        assert "FINISHED" in cells
        for c in cells:
            assert not c.endswith("…") or len(c) >= SHRINK_MIN, f"cell cut to {c!r}: {row}"


@pytest.mark.parametrize("columns_env", [True, False], ids=["COLUMNS", "terminal-size"])
def test_runs_list_reads_at_80_and_120_columns(table_data: Data, columns_env: bool) -> None:
    in_e = {"r1", "r2", "r3", LONG_NAME}
    header80, lines80 = _table(table_data, 80, "-e", "e", columns_env=columns_env)
    header120, lines120 = _table(table_data, 120, "-e", "e", columns_env=columns_env)
    for header, lines in ((header80, lines80), (header120, lines120)):
        _check_readable(table_data, header, lines, in_e)
        # the main metric is there, with its values
        assert "acc" in header, header
        r3 = next(r for r in lines if r.startswith(table_data.runs["r3"]))
        assert "0.95" in _cells(r3)
    assert len(header120) > len(header80)
    assert {"loss", "params.lr"} <= set(header120), header120
    # the long name is shortened, never below SHRINK_MIN, and longer where there is room
    long80 = next(r for r in lines80 if r.startswith(table_data.runs[LONG_NAME]))
    long120 = next(r for r in lines120 if r.startswith(table_data.runs[LONG_NAME]))
    assert len(_cells(long80)[1]) < len(_cells(long120)[1]) <= len(LONG_NAME)

    # Runs of several experiments: still readable at both widths.
    every = {"r1", "r2", "r3", "o1", LONG_NAME}
    for width in (80, 120):
        header, lines = _table(table_data, width, columns_env=columns_env)
        _check_readable(table_data, header, lines, every)
    assert "experiment" in header


def test_chosen_columns_on_a_terminal(table_data: Data) -> None:
    chosen = "id,name,status,start,metrics.loss,params.lr,tags.team"
    code, lines = on_a_terminal("runs", "list", "-e", "e", "--columns", chosen, "--uri",
                                table_data.uri, columns=120)
    assert code == 0, lines
    assert _cells(lines[0]) == ["run id", "name", "status", "start", "loss", "params.lr",
                                "tags.team"]
    r1 = next(r for r in lines if r.startswith(table_data.runs["r1"]))
    assert _cells(r1)[-3:] == ["0.2", "0.1", "a"]
    # Too narrow for all: those that do not fit are left out whole, and a note says which.
    code, lines = on_a_terminal("runs", "list", "-e", "e", "--columns", chosen, "--uri",
                                table_data.uri, columns=80)
    assert code == 0, lines
    header = _cells(lines[0])
    assert header == ["run id", "name", "status", "start", "loss"], lines
    assert all(len(line) <= 80 for line in lines)
    note = " ".join(lines[lines.index(next(x for x in lines if x.startswith("note:"))):])
    assert "params.lr, tags.team left out, too wide for 80 columns" in note, lines


def test_columns_option_against_the_data(table_data: Data) -> None:
    out = table_data.ok("runs", "list", "-e", "e", "-c",
                        "name, metrics.loss ,params.lr,tags.team,duration,stage,end").stdout
    lines = out.splitlines()
    assert _cells(lines[0]) == ["name", "loss", "params.lr", "tags.team", "duration", "stage",
                                "end"]
    r3 = next(line for line in lines if line.startswith("r3 "))
    assert _cells(r3)[:2] == ["r3", "0.3"]  # r3 has no loss: that cell is empty
    assert "active" in _cells(r3) and re.search(r"\d+\.\ds", r3)
    # the filter grammar's names work too, and a column named twice shows once
    aliased = table_data.ok("runs", "list", "-e", "e", "--columns",
                            "run_id,attributes.start_time,metric.acc,run_id").stdout
    assert _cells(aliased.splitlines()[0]) == ["run id", "start", "acc"]


@pytest.mark.parametrize(("columns", "expected"), [
    ("id,bogus", "unknown column 'bogus'"),
    ("id,foo.bar", "unknown column 'foo.bar'"),
    ("metrics.", "not a valid column"),
    ("params.a!b", "not a valid column"),
    (" , ", "names no column"),
])
def test_unknown_columns_are_refused(table_data: Data, columns: str, expected: str) -> None:
    message = table_data.error("runs", "list", "--columns", columns)
    assert expected in message and "--columns" in message and "INVALID_ARGUMENT" in message
    if "unknown" in expected:  # it says what would work
        assert "metrics.KEY" in message and "status" in message
    # refused before anything is searched, with --json too
    assert expected in table_data.error("runs", "list", "--columns", columns, "--json")


def test_json_is_unchanged_by_columns(table_data: Data) -> None:
    plain = table_data.ok("runs", "list", "-e", "e", "--json").stdout
    assert table_data.ok("runs", "list", "-e", "e", "--json", "-c", "id").stdout == plain


def test_parse_columns() -> None:
    assert parse_columns("ID,Name,param.lr,Tags.team,metrics.val.loss,user_id,end_time") == [
        "id", "name", "params.lr", "tags.team", "metrics.val.loss", "user", "end"]
    with pytest.raises(InvalidArgument, match="unknown column 'experiments'"):
        parse_columns("experiments")


def test_metric_headers_stay_unambiguous() -> None:
    assert metric_header("loss") == "loss"
    assert metric_header("status") == "metrics.status"   # not the status column
    assert metric_header("params.lr") == "metrics.params.lr"   # not a param column


def _column(name: str, width: int, *, header: str | None = None,
            shrink: bool = False) -> RunColumn:
    return RunColumn(name, header or name, (Text("x" * width),), shrink=shrink)


def test_fit_columns_leaves_out_whole_columns_and_shortens_only_text() -> None:
    cols = [_column("id", 32), _column("name", 30, shrink=True), _column("status", 8),
            _column("wide", 30), _column("narrow", 6)]
    kept, dropped = fit_columns(cols, 80)
    widths = {c.name: w for c, w in kept}
    # id 32 + name (at least SHRINK_MIN) + status 8 + narrow 6, two spaces apart; "wide" does
    # not fit whole and is left out; the room left goes back to the name.
    assert [c.name for c in dropped] == ["wide"]
    assert widths["id"] == 32 and widths["status"] == 8 and widths["narrow"] == 6
    assert SHRINK_MIN <= widths["name"] <= 30
    assert sum(widths.values()) + 2 * (len(widths) - 1) == 80
    # wide enough: everything at its natural width
    kept, dropped = fit_columns(cols, 200)
    assert dropped == [] and [w for _, w in kept] == [32, 30, 8, 30, 6]
    # narrower than the id: the id still comes, whole
    kept, dropped = fit_columns(cols, 20)
    assert [(c.name, w) for c, w in kept] == [("id", 32)]
    # a shortened column never hides its header
    long_header = _column("params.learning_rate", 40, shrink=True)
    assert long_header.minimum == len("params.learning_rate")


def test_runs_list_rendered_narrow_by_the_cli_runner(table_data: Data) -> None:
    """COLUMNS alone (no terminal): the same fitting applies to piped output."""
    result = CliRunner().invoke(app, ["runs", "list", "--uri", table_data.uri],
                                env={"COLUMNS": "75"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 75 for line in lines)
    assert _cells(lines[0])[:4] == ["run id", "name", "status", "start"]
    for run_id in table_data.runs.values():
        assert any(line.startswith(run_id + "  ") for line in lines)
