"""``modelyard runs list|show|compare|delete|restore``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import typer
from rich.table import Table
from rich.text import Text

from modelyard.backend.protocol import Backend
from modelyard.cli.common import MARKUP_MODE, console, err_console, handle_errors, print_json
from modelyard.cli.history import history_command
from modelyard.cli.runs_table import (
    COLUMNS_EXAMPLE,
    build_columns,
    fit_columns,
    parse_columns,
    render_table,
)
from modelyard.cli.shared import (
    about_run,
    cell,
    check_view,
    fmt_number,
    fmt_time,
    json_number,
    json_option,
    open_backend,
    resolve_experiment,
    run_json,
    say,
    uri_option,
    view_option,
)
from modelyard.domain import search
from modelyard.domain.entities import Run
from modelyard.domain.validation import validate_max_results
from modelyard.errors import InvalidArgument, InvalidFilter

runs_app = typer.Typer(help="Search, inspect, compare, delete and restore runs.",
                       no_args_is_help=True, rich_markup_mode=MARKUP_MODE)

MAX_DATA_COLUMNS = 6
FILTER_HELP = ("Search filter, e.g. \"metrics.acc > 0.9 and (params.lr = '0.1' or "
               "tags.team = 'x')\".")
ORDER_HELP = "Sort clause such as 'metrics.acc DESC' (repeatable)."
EXPERIMENT_HELP = "Experiment name or id (repeatable); default every experiment."
COLUMNS_HELP = (
    f"The table's columns, comma-separated, e.g. {COLUMNS_EXAMPLE}; also end, duration, "
    "experiment, user and stage. Default: id, name, status, start, the experiment (when the "
    "runs span several) and the main metrics and params, as many as fit."
)


def _filter_fields(expr: search.Expr | None) -> list[search.Field]:
    if expr is None:
        return []
    if isinstance(expr, search.Comparison):
        return [expr.field]
    if isinstance(expr, search.Not):
        return _filter_fields(expr.item)
    return [f for item in expr.items for f in _filter_fields(item)]


def _preferred(filter_expr: str | None, order_by: Sequence[str]) -> list[search.Field]:
    """Metrics and params the user sorted or filtered by: shown first. A clause that does not
    parse is left for the backend to report."""
    try:
        fields = [k.field for k in search.parse_order_by(list(order_by))]
        fields += _filter_fields(search.parse_filter(filter_expr))
    except InvalidFilter:
        return []
    kinds = (search.FieldKind.METRIC, search.FieldKind.PARAM)
    return [f for f in dict.fromkeys(fields) if f.kind in kinds]


def data_columns(runs: Sequence[Run], preferred: Sequence[search.Field] = ()) -> list[str]:
    """Up to six ``metrics.x`` / ``params.y`` columns: those the user asked about first, then
    the most common metrics and params, three of each when both have enough."""
    metric_counts = Counter(k for r in runs for k in r.metrics)
    param_counts = Counter(k for r in runs for k in r.params)

    def ranked(counts: Counter[str], kind: str) -> list[str]:
        return [f"{kind}.{k}" for k in sorted(counts, key=lambda k: (-counts[k], k))]

    metrics, params = ranked(metric_counts, "metrics"), ranked(param_counts, "params")
    chosen = [f"{f.kind.value}.{f.key}" for f in preferred
              if f.key in (metric_counts if f.kind is search.FieldKind.METRIC else param_counts)]
    chosen = chosen[:MAX_DATA_COLUMNS]
    half = MAX_DATA_COLUMNS // 2
    n_metrics = min(len(metrics), max(half, MAX_DATA_COLUMNS - len(params)))
    for name in metrics[:n_metrics] + params + metrics[n_metrics:]:
        if len(chosen) >= MAX_DATA_COLUMNS:
            break
        if name not in chosen:
            chosen.append(name)
    return chosen


def _experiment_ids(b: Backend, refs: Sequence[str]) -> list[str] | None:
    """The experiments named (by id or name); None, meaning every experiment, for none."""
    if refs:
        return list(dict.fromkeys(resolve_experiment(b, ref).experiment_id for ref in refs))
    return None


@runs_app.command("list")
@handle_errors
def list_runs(
    experiment: list[str] = typer.Option([], "--experiment", "-e", help=EXPERIMENT_HELP),  # noqa: B008
    filter_expr: str | None = typer.Option(None, "--filter", "-f", help=FILTER_HELP),
    order_by: list[str] = typer.Option([], "--order-by", "-o", help=ORDER_HELP),  # noqa: B008
    max_results: int = typer.Option(100, "--max-results", "-n",
                                    help="Show at most this many runs."),
    columns: str | None = typer.Option(None, "--columns", "-c", help=COLUMNS_HELP),
    view: str = view_option(),
    as_json: bool = json_option(),
    uri: str | None = uri_option(),
) -> None:
    """Search runs: a table of id, name, status, start time and the main metrics that fit."""
    run_view = check_view(view)
    validate_max_results(max_results)
    chosen = parse_columns(columns) if columns is not None else None
    b = open_backend(uri)
    page = b.search_runs(_experiment_ids(b, experiment), filter=filter_expr, order_by=order_by,
                         view=run_view, max_results=max_results, include_total=True)
    runs: list[Run] = list(page.items)
    if page.next_page_token is not None:
        err_console.print(f"showing the first {len(runs)} of {page.total:,} matching runs "
                          "(raise --max-results or narrow --filter)", highlight=False)
    if as_json:
        print_json([run_json(r) for r in runs])
        return
    if not runs:
        say("no runs match")
        return
    if chosen is None:
        several = len({r.info.experiment_id for r in runs}) > 1
        names = ["id", "name", "status", "start", *(["experiment"] if several else []),
                 *data_columns(runs, _preferred(filter_expr, order_by))]
    else:
        names = chosen
    width = console.width
    kept, dropped = fit_columns(build_columns(names, runs), width)
    console.print(render_table(kept))
    if chosen is not None and dropped:
        err_console.print(
            cell(f"note: {', '.join(c.name for c in dropped)} left out, too wide for {width} "
                 "columns (widen the terminal, set COLUMNS, or use --json)"),
            markup=False, highlight=False)


@runs_app.command("count")
@handle_errors
def count_runs(
    experiment: list[str] = typer.Option([], "--experiment", "-e", help=EXPERIMENT_HELP),  # noqa: B008
    filter_expr: str | None = typer.Option(None, "--filter", "-f", help=FILTER_HELP),
    view: str = view_option(),
    as_json: bool = json_option(),
    uri: str | None = uri_option(),
) -> None:
    """How many runs match a filter, without listing them."""
    run_view = check_view(view)
    b = open_backend(uri)
    count = b.count_runs(_experiment_ids(b, experiment), filter=filter_expr, view=run_view)
    if as_json:
        print_json({"count": count})
        return
    typer.echo(count)


def _kv_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  show_header=False)
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(cell(key), cell(value))
    return table


@runs_app.command("show")
@handle_errors
def show_run(
    run_id: str = typer.Argument(..., help="The run id."),
    as_json: bool = json_option(),
    uri: str | None = uri_option(),
) -> None:
    """A run's info, params, latest metrics and tags."""
    with about_run(run_id):
        run = open_backend(uri).get_run(run_id)
    if as_json:
        print_json(run_json(run, with_steps=True))
        return
    info = run.info
    duration = "-" if info.end_time is None else f"{(info.end_time - info.start_time) / 1000:.1f}s"
    console.print(_kv_table("run", [
        ("id", info.run_id), ("name", info.run_name), ("experiment", info.experiment_id),
        ("status", info.status.value), ("stage", info.lifecycle_stage.value),
        ("user", info.user_id), ("start", fmt_time(info.start_time)),
        ("end", fmt_time(info.end_time)), ("duration", duration),
        *([("parent", info.parent_run_id)] if info.parent_run_id else []),
    ]))
    sections = [
        ("params", sorted(run.params.items())),
        ("metrics", [(k, f"{fmt_number(m.value)}  (step {m.step})")
                     for k, m in sorted(run.latest_metrics.items())]),
        ("tags", sorted(run.tags.items())),
    ]
    for title, rows in sections:
        console.print()
        console.print(_kv_table(title, rows) if rows else Text(f"{title}: none", style="bold"))


@runs_app.command("compare")
@handle_errors
def compare_runs(
    run_ids: list[str] = typer.Argument(..., metavar="RUN_ID",  # noqa: B008
                                        help="Two or more run ids."),
    as_json: bool = json_option(),
    uri: str | None = uri_option(),
) -> None:
    """Params and metrics side by side, one column per run; differing rows highlighted."""
    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise InvalidArgument("compare needs at least two different run ids", field="run_ids")
    b = open_backend(uri)
    runs = []
    for run_id in ids:
        with about_run(run_id):
            runs.append(b.get_run(run_id))
    rows: list[tuple[str, list[str | float | None]]] = []
    for key in sorted({k for r in runs for k in r.params}):
        rows.append((f"params.{key}", [r.params.get(key) for r in runs]))
    for key in sorted({k for r in runs for k in r.metrics}):
        rows.append((f"metrics.{key}", [r.metrics.get(key) for r in runs]))
    if as_json:
        print_json({
            "runs": [{"run_id": r.id, "run_name": r.name} for r in runs],
            "rows": [{"key": key,
                      "values": {r.id: json_number(v) if isinstance(v, float) else v
                                 for r, v in zip(runs, values, strict=True)},
                      "differs": _differs(values)} for key, values in rows],
        })
        return
    table = Table(box=None, header_style="bold", caption="* marks values that differ",
                  caption_justify="left")
    table.add_column("key", no_wrap=True)
    for r in runs:
        table.add_column(cell(r.name).append("\n").append(cell(r.id)), justify="right",
                         overflow="fold")
    for key, values in rows:
        differs = _differs(values)
        style = "bold yellow" if differs else ""
        shown = ["-" if v is None else fmt_number(v) if isinstance(v, float) else v
                 for v in values]
        table.add_row(cell(("* " if differs else "  ") + key, style),
                      *(cell(s, style) for s in shown))
    console.print(table)


def _differs(values: Sequence[object]) -> bool:
    return len({repr(v) for v in values}) > 1


@runs_app.command("delete")
@handle_errors
def delete_run(
    run_id: str = typer.Argument(..., help="The run id."),
    uri: str | None = uri_option(),
) -> None:
    """Soft-delete a run (``modelyard gc`` frees it for good)."""
    with about_run(run_id):
        open_backend(uri).delete_run(run_id)
    say(f"deleted run {run_id}")


@runs_app.command("restore")
@handle_errors
def restore_run(
    run_id: str = typer.Argument(..., help="The run id."),
    uri: str | None = uri_option(),
) -> None:
    """Restore a deleted run."""
    with about_run(run_id):
        open_backend(uri).restore_run(run_id)
    say(f"restored run {run_id}")


runs_app.command("history")(history_command)
