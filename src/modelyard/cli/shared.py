"""Helpers the data command groups share: the ``--uri`` option, opening a backend, resolving
experiments, rendering values and entities for tables and ``--json``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from modelyard.backend.protocol import Backend
from modelyard.cli.safe_text import safe_text
from modelyard.domain.entities import Experiment, Run, ViewType
from modelyard.domain.validation import is_experiment_id
from modelyard.errors import ExperimentNotFound, InvalidArgument, ModelyardError, RunNotFound
from modelyard.settings import DEFAULT_DATA_DIR
from modelyard.wire.schemas import experiment_to_json, float_to_json

URI_HELP = (
    "Where the data is: an http(s):// server URL, or a data folder for embedded mode "
    f"(default: ./{DEFAULT_DATA_DIR})."
)
VIEW_HELP = "Which lifecycle stages to show: active_only, deleted_only or all."
JSON_HELP = "Print JSON instead of a table."


def uri_option() -> Any:
    return typer.Option(None, "--uri", envvar="MODELYARD_URI", help=URI_HELP,
                        show_envvar=True)


def view_option() -> Any:
    return typer.Option(ViewType.ACTIVE_ONLY.value, "--view", help=VIEW_HELP)


def json_option() -> Any:
    return typer.Option(False, "--json", help=JSON_HELP)


def is_server_url(uri: str) -> bool:
    """What ``--uri`` means, in every command: an http(s) URL is a server, anything else a
    data folder (embedded mode)."""
    return uri.startswith(("http://", "https://"))


def data_folder(uri: str, *, create: bool = False) -> Path:
    """The embedded data folder ``--uri`` names.

    It must already exist unless ``create`` is set, so that a mistyped ``--uri`` is refused
    instead of silently creating an empty folder.
    """
    folder = Path(uri).expanduser()
    if not create and not folder.is_dir():
        raise InvalidArgument(
            f"no modelyard data folder at {str(folder)!r}; pass --uri (a data folder or "
            "an http(s):// server URL) or set MODELYARD_URI", field="uri")
    return folder


def open_backend(uri: str | None, *, create: bool = False) -> Backend:
    """The SDK's backend for ``uri`` (default ``./modelyard-data``); see :func:`data_folder`."""
    from modelyard.client import api

    target = uri or DEFAULT_DATA_DIR
    if not is_server_url(target):
        target = str(data_folder(target, create=create))
    return api.backend(target)


def check_view(view: str) -> ViewType:
    try:
        return ViewType(view.lower())
    except ValueError:
        names = ", ".join(v.value for v in ViewType)
        raise InvalidArgument(f"--view must be one of {names}, not {view!r}",
                              field="view") from None


def resolve_experiment(b: Backend, ref: str, *, deleted: bool = False) -> Experiment:
    """An experiment by id (all digits) or by name; an all-digit name works too.

    A name may be held by an active experiment and by deleted ones: by default the active one
    is meant; with ``deleted`` (restoring) the most recently deleted one.
    """
    if is_experiment_id(ref):
        try:
            return b.get_experiment(ref)
        except ExperimentNotFound as by_id:
            try:
                return _by_name(b, ref, deleted=deleted)
            except ExperimentNotFound:
                raise by_id from None
    return _by_name(b, ref, deleted=deleted)


def _by_name(b: Backend, name: str, *, deleted: bool) -> Experiment:
    if deleted:
        gone = [e for e in all_experiments(b, ViewType.DELETED_ONLY) if e.name == name]
        if gone:
            return max(gone, key=lambda e: (e.deleted_time or 0, int(e.experiment_id)))
    return b.get_experiment_by_name(name)


def all_experiments(b: Backend, view: ViewType) -> list[Experiment]:
    out: list[Experiment] = []
    token: str | None = None
    while True:
        page = b.list_experiments(view=view, max_results=1000, page_token=token)
        out.extend(page.items)
        token = page.next_page_token
        if not token:
            return out


@contextlib.contextmanager
def about_run(run_id: str) -> Iterator[None]:
    """Make sure an error about a run names the run id the user typed."""
    try:
        yield
    except ModelyardError as exc:
        if run_id in exc.message or not (isinstance(exc, RunNotFound) or exc.field == "run_id"):
            raise
        raise type(exc)(f"run {run_id!r}: {exc.message}", field=exc.field) from None


# ---------------------------------------------------------------------- rendering


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def fmt_number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# JSON has no NaN or infinity: the same strings the REST API uses ("NaN", "Infinity", ...).
json_number = float_to_json


# Experiments print exactly as the REST API returns them.
experiment_json = experiment_to_json


def run_json(run: Run, *, with_steps: bool = False) -> dict[str, Any]:
    info = run.info
    metrics: dict[str, Any]
    if with_steps:
        metrics = {k: {"value": json_number(m.value), "step": m.step, "timestamp": m.timestamp}
                   for k, m in sorted(run.latest_metrics.items())}
    else:
        metrics = {k: json_number(v) for k, v in sorted(run.metrics.items())}
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status.value,
        "lifecycle_stage": info.lifecycle_stage.value,
        "user_id": info.user_id,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "parent_run_id": info.parent_run_id,
        "deleted_time": info.deleted_time,
        "params": dict(sorted(run.params.items())),
        "metrics": metrics,
        "tags": dict(sorted(run.tags.items())),
    }


def say(text: str) -> None:
    """One plain line on stdout: no markup, and control characters in the user-supplied names
    it may quote shown escaped (``safe_text``)."""
    from modelyard.cli.common import console

    console.print(safe_text(text), markup=False, highlight=False, emoji=False, soft_wrap=True)


def cell(value: object, style: str = "") -> Text:
    """A table cell showing user content literally: no markup interpretation, control
    characters shown escaped (``safe_text``)."""
    return safe_text(value, style)
