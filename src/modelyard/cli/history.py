"""``modelyard runs history RUN_ID KEY``: one metric's history as a table, JSON, CSV or Arrow."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import typer
from rich.table import Table

from modelyard.backend.files import create_beside
from modelyard.backend.protocol import Backend
from modelyard.cli.common import console, handle_errors, print_json
from modelyard.cli.shared import about_run, fmt_number, open_backend, uri_option
from modelyard.domain.history import HistoryColumns, HistoryFormat
from modelyard.domain.validation import validate_max_points
from modelyard.errors import InvalidArgument
from modelyard.wire.history_formats import encode_history
from modelyard.wire.schemas import history_to_json

FORMATS = ("table", "json", "csv", "arrow")


def _export_full(b: Backend, run_id: str, key: str, fmt: HistoryFormat,
                 output: Path | None) -> None:
    """The whole history, streamed: into ``output``, or through a temp file to stdout."""
    if output is not None:
        b.export_metric_history(run_id, key, output, format=fmt)
        return
    with tempfile.TemporaryDirectory(prefix="modelyard-") as tmp:
        path = Path(tmp) / f"history.{fmt.value}"
        b.export_metric_history(run_id, key, path, format=fmt)
        sys.stdout.flush()
        with path.open("rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_beside(output)  # the mode of any new file (mkstemp's would be 0600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@handle_errors
def history_command(
    run_id: str = typer.Argument(..., help="The run id."),
    key: str = typer.Argument(..., help="The metric key."),
    max_points: int | None = typer.Option(
        None, "--max-points", "-n",
        help="At most this many points (2-100,000) that keep the curve's shape: first, last, "
             "and each step bucket's min, max and first NaN. Default: every point."),
    output_format: str = typer.Option("table", "--format", "-f",
                                      help="table, json, csv or arrow."),
    output: Path | None = typer.Option(  # noqa: B008
        None, "--output", "-o", help="Write to this file instead of stdout (csv, arrow, json)."),
    uri: str | None = uri_option(),
) -> None:
    """One metric's history: every point, or a downsampled curve with --max-points.

    csv and arrow without --max-points stream the full history with constant memory, whatever
    its length; arrow needs --output (it is binary).
    """
    if output_format not in FORMATS:
        raise InvalidArgument(f"--format must be one of {', '.join(FORMATS)}, not "
                              f"{output_format!r}", field="format")
    if max_points is not None:
        validate_max_points(max_points)
    if output_format == "arrow" and output is None:
        raise InvalidArgument("--format arrow writes binary data: pass --output FILE",
                              field="output")
    if output_format == "table" and output is not None:
        raise InvalidArgument("--output needs --format csv, arrow or json", field="output")
    if output is not None and output.is_dir():
        raise InvalidArgument(f"--output {str(output)!r} is a directory; name a file",
                              field="output")
    b = open_backend(uri)
    with about_run(run_id):
        if output_format in ("csv", "arrow") and max_points is None:
            _export_full(b, run_id, key, HistoryFormat(output_format), output)
            return
        points = b.get_metric_history(run_id, key, max_points=max_points)
    if output_format in ("csv", "arrow"):
        pages = [HistoryColumns.from_points(points)]
        _write(b"".join(encode_history(HistoryFormat(output_format), key, pages)), output)
    elif output_format == "json":
        if output is None:
            print_json(history_to_json(key, points))
        else:
            import orjson

            _write(orjson.dumps(history_to_json(key, points)) + b"\n", output)
    else:
        table = Table(box=None, header_style="bold")
        for name in ("step", "timestamp", "value"):
            table.add_column(name, justify="right")
        for m in points:
            table.add_row(str(m.step), str(m.timestamp), fmt_number(m.value))
        console.print(table)
