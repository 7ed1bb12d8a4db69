"""The ``runs list`` table: its columns, ``--columns``, and fitting them to the terminal.

A column is named as in ``--columns``: a run attribute (``id``, ``name``, ``status``, ...) or
``metrics.KEY``, ``params.KEY``, ``tags.KEY``. The table is never squeezed until cells read
``…``: columns are taken in order while they fit at their full width (text that can run long,
such as a name or a param value, may be shortened to ``SHRINK_MIN`` characters, never less),
and the columns that do not fit are left out. The run id is never shortened: it is what a user
copies into ``runs show``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.cells import cell_len
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from modelyard.cli.safe_text import safe_text
from modelyard.cli.shared import fmt_number
from modelyard.domain.entities import Run
from modelyard.domain.validation import validate_key
from modelyard.errors import InvalidArgument

# --columns name -> header, for the run attributes.
ATTRIBUTE_HEADERS = {
    "id": "run id",
    "name": "name",
    "status": "status",
    "start": "start",
    "end": "end",
    "duration": "duration",
    "experiment": "experiment",
    "user": "user",
    "stage": "stage",
}
# The attribute names of the filter grammar (``attributes.start_time``...) work too.
_ATTRIBUTE_ALIASES = {
    "run_id": "id", "run_name": "name", "start_time": "start", "end_time": "end",
    "user_id": "user", "experiment_id": "experiment", "lifecycle_stage": "stage",
}
_KINDS = {"metric": "metrics", "metrics": "metrics", "param": "params", "params": "params",
          "parameter": "params", "parameters": "params", "tag": "tags", "tags": "tags"}
_ATTRIBUTE_PREFIXES = ("attributes.", "attribute.", "attr.", "run.")

SHRINK_MIN = 10  # a shortened cell keeps at least this many characters (with its "…")
GAP = 2  # spaces between two columns
COLUMNS_EXAMPLE = "id,name,status,start,metrics.loss,params.lr,tags.team"


def parse_columns(text: str) -> list[str]:
    """``--columns`` → canonical column names, in the order given, without repeats.

    Raises:
        InvalidArgument: an unknown column, or no column at all.
    """
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        lowered = item.lower()
        for prefix in _ATTRIBUTE_PREFIXES:
            if lowered.startswith(prefix) and lowered.removeprefix(prefix) in {
                    *ATTRIBUTE_HEADERS, *_ATTRIBUTE_ALIASES}:
                lowered = lowered.removeprefix(prefix)
        if lowered in ATTRIBUTE_HEADERS or lowered in _ATTRIBUTE_ALIASES:
            names.append(_ATTRIBUTE_ALIASES.get(lowered, lowered))
            continue
        kind, dot, key = item.partition(".")
        if dot and kind.lower() in _KINDS:
            try:
                validate_key(key, field="key")
            except InvalidArgument as exc:
                raise InvalidArgument(f"--columns: {item!r} is not a valid column: "
                                      f"{exc.message}", field="columns") from None
            names.append(f"{_KINDS[kind.lower()]}.{key}")
            continue
        raise InvalidArgument(
            f"--columns: unknown column {item!r}; use {', '.join(ATTRIBUTE_HEADERS)}, "
            f"metrics.KEY, params.KEY or tags.KEY (e.g. --columns {COLUMNS_EXAMPLE})",
            field="columns")
    if not names:
        raise InvalidArgument(f"--columns names no column (e.g. --columns {COLUMNS_EXAMPLE})",
                              field="columns")
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class RunColumn:
    """One column: its name, header and a cell per run."""

    name: str
    header: str
    cells: tuple[Text, ...]
    justify: JustifyMethod = "left"
    shrink: bool = False  # may be shortened (with "…") down to ``minimum``

    @property
    def natural(self) -> int:
        """The width that shows the header and every cell in full."""
        return max([cell_len(self.header), *(c.cell_len for c in self.cells)])

    @property
    def minimum(self) -> int:
        if not self.shrink:
            return self.natural
        return max(cell_len(self.header), min(self.natural, SHRINK_MIN))


def compact_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def duration(run: Run) -> str:
    if run.end_time is None:
        return "-"
    seconds = max(0, run.end_time - run.start_time) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _text(value: object, style: str = "") -> Text:
    """User content on one line, literally: no markup, and line breaks, tabs and other control
    characters shown escaped (``\\n``, ``\\t``, ``\\x1b``: ``safe_text``)."""
    return safe_text(value, style)


_STATUS_STYLE = {"FINISHED": "green", "FAILED": "red", "KILLED": "red", "RUNNING": "yellow"}
_ATTRIBUTES: dict[str, Callable[[Run], Text]] = {
    "id": lambda r: safe_text(r.id),
    "name": lambda r: _text(r.name, "cyan"),
    "status": lambda r: Text(r.status.value, style=_STATUS_STYLE.get(r.status.value, "")),
    "start": lambda r: Text(compact_time(r.start_time)),
    "end": lambda r: Text(compact_time(r.end_time)),
    "duration": lambda r: Text(duration(r)),
    "experiment": lambda r: safe_text(r.experiment_id),
    "user": lambda r: _text(r.user_id),
    "stage": lambda r: Text(r.info.lifecycle_stage.value),
}
_RIGHT = frozenset({"experiment", "duration"})
_SHRINK = frozenset({"name", "user"})


def metric_header(key: str) -> str:
    """A metric column is headed by its key alone, unless that reads as another column."""
    taken = {*ATTRIBUTE_HEADERS, *ATTRIBUTE_HEADERS.values()}
    if key in taken or key.partition(".")[0].lower() in _KINDS:
        return f"metrics.{key}"
    return key


def build_columns(names: Sequence[str], runs: Sequence[Run]) -> list[RunColumn]:
    columns: list[RunColumn] = []
    for name in names:
        if name in _ATTRIBUTES:
            columns.append(RunColumn(
                name, ATTRIBUTE_HEADERS[name], tuple(_ATTRIBUTES[name](r) for r in runs),
                justify="right" if name in _RIGHT else "left", shrink=name in _SHRINK))
            continue
        kind, _, key = name.partition(".")
        if kind == "metrics":
            values = [r.metrics.get(key) for r in runs]
            columns.append(RunColumn(
                name, metric_header(key),
                tuple(Text("" if v is None else fmt_number(v)) for v in values),
                justify="right"))
        else:
            source = "params" if kind == "params" else "tags"
            columns.append(RunColumn(
                name, name, tuple(_text(getattr(r, source).get(key, "")) for r in runs),
                shrink=True))
    return columns


def fit_columns(columns: Sequence[RunColumn],
                width: int) -> tuple[list[tuple[RunColumn, int]], list[RunColumn]]:
    """The columns that fit in ``width`` (in order, each with its width) and those left out.

    Columns are taken in order while they fit at their minimum width (the first always is);
    the room left then lets shortened columns grow back, the earlier ones first.
    """
    widths: dict[int, int] = {}
    used = 0
    for i, column in enumerate(columns):
        need = column.minimum + (GAP if widths else 0)
        if not widths or used + need <= width:
            widths[i] = column.minimum
            used += need
    spare = width - used
    for i in widths:
        if spare <= 0:
            break
        grow = min(spare, columns[i].natural - widths[i])
        widths[i] += grow
        spare -= grow
    kept = [(columns[i], w) for i, w in widths.items()]
    dropped = [c for i, c in enumerate(columns) if i not in widths]
    return kept, dropped


def render_table(kept: Sequence[tuple[RunColumn, int]]) -> Table:
    """A borderless table of exactly these widths (``GAP`` spaces between columns)."""
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, GAP // 2))
    for column, width in kept:
        # Only an id wider than the whole terminal ever folds (onto two lines, still whole).
        table.add_column(safe_text(column.header), justify=column.justify, width=width,
                         no_wrap=column.name != "id",
                         overflow="ellipsis" if column.shrink else "fold")
    for row in zip(*(column.cells for column, _ in kept), strict=True):
        table.add_row(*row)
    return table
