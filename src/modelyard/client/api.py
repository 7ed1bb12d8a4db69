"""The fluent SDK: ``set_uri``, ``start_run``, ``get_run``, ``search_runs`` and friends.

The URI decides the backend: an ``http(s)://`` URL talks to a server; anything else is a data
folder for the embedded backend (default ``./modelyard-data``). ``MODELYARD_URI`` is read when
no URI was set explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import getpass
import os
import sys
import threading
import weakref
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from modelyard.artifacts.paths import normalize_artifact_path, safe_join
from modelyard.backend.parallel import run_parallel
from modelyard.backend.protocol import Backend
from modelyard.client.run import ActiveRun
from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    Metric,
    NewRun,
    Param,
    Run,
    RunInfo,
    RunStatus,
    Tag,
)
from modelyard.domain.history import parse_history_format
from modelyard.domain.names import new_run_id, new_run_name
from modelyard.domain.paging import Page
from modelyard.domain.retention import ABANDONED_AFTER_MS, PURGE_AFTER_MS
from modelyard.domain.validation import (
    as_text,
    is_experiment_id,
    validate_new_run,
    validate_param,
    validate_run_id,
    validate_tag,
)
from modelyard.errors import (
    AlreadyExists,
    ArtifactNotFound,
    ExperimentNotFound,
    InvalidArgument,
    InvalidState,
    ModelyardError,
    ParamOverwrite,
)
from modelyard.settings import DEFAULT_DATA_DIR
from modelyard.tracking.gc import GcReport
from modelyard.tracking.service import now_ms

_lock = threading.RLock()
_uri: str | None = None
_backends: dict[str, Backend] = {}
_local = threading.local()
_open_runs: dict[str, ActiveRun] = {}


def set_uri(uri: str | os.PathLike[str]) -> None:
    """Point the SDK at a server (``http://host:8750``) or an embedded data folder."""
    global _uri
    with _lock:
        _uri = os.fspath(uri)


def get_uri() -> str:
    """The URI in effect: ``set_uri``'s, else ``MODELYARD_URI``, else ``./modelyard-data``."""
    return _uri or os.environ.get("MODELYARD_URI") or DEFAULT_DATA_DIR


def backend(uri: str | None = None) -> Backend:
    """The (cached) backend for a URI; one per URI per process."""
    uri = uri or get_uri()
    key = uri if uri.startswith(("http://", "https://")) else str(Path(uri).absolute())
    with _lock:
        found = _backends.get(key)
        if found is None:
            found = _open_backend(uri)
            _backends[key] = found
        return found


def _cache_dir() -> Path:
    """Where the SDK keeps its journal of unfinished uploads (``MODELYARD_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/modelyard``, else ``~/.cache/modelyard``)."""
    explicit = os.environ.get("MODELYARD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelyard"


def _part_size() -> int:
    """``MODELYARD_UPLOAD_PART_MIB`` (1-256) in bytes, else the default (16 MiB)."""
    from modelyard.backend.multipart import DEFAULT_PART_SIZE

    text = os.environ.get("MODELYARD_UPLOAD_PART_MIB", "").strip()
    if not text:
        return DEFAULT_PART_SIZE
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 256:
        raise InvalidArgument(f"MODELYARD_UPLOAD_PART_MIB must be a whole number from 1 to "
                              f"256, not {text!r}", field="MODELYARD_UPLOAD_PART_MIB")
    return int(text) << 20


def _open_backend(uri: str) -> Backend:
    if uri.startswith(("http://", "https://")):
        from modelyard.backend.remote import RemoteBackend

        return RemoteBackend(uri, cache_dir=_cache_dir(), part_size=_part_size())
    from modelyard.backend.local import LocalBackend
    from modelyard.settings import Settings

    return LocalBackend(Settings.for_data_dir(uri))


def _stack() -> list[ActiveRun]:
    stack: list[ActiveRun] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _resolve_experiment(b: Backend, experiment: str | None) -> Experiment:
    if experiment is None:
        return b.get_experiment("0")
    try:
        return b.get_experiment_by_name(experiment)
    except ExperimentNotFound:
        try:
            return b.create_experiment(experiment)
        except AlreadyExists:  # another process created it meanwhile
            return b.get_experiment_by_name(experiment)


# (backend, name) -> experiment id: a training loop starting many runs asks the backend once.
# An id gone stale (experiment deleted or renamed meanwhile) is dropped when a creation is
# refused (see ActiveRun's on_refused), so the next start_run looks the name up again.
_experiment_ids_cache: weakref.WeakKeyDictionary[Backend, dict[str, str]] = (
    weakref.WeakKeyDictionary()
)


def _experiment_id(b: Backend, experiment: str | None) -> str:
    ids = _experiment_ids_cache.setdefault(b, {})
    name = experiment or ""
    cached = ids.get(name)
    if cached is None:
        exp = _resolve_experiment(b, experiment)
        if exp.lifecycle_stage is not LifecycleStage.ACTIVE:
            raise InvalidState(f"experiment {exp.name!r} ({exp.experiment_id}) is deleted; "
                               "restore it to add runs", field="experiment")
        cached = ids[name] = exp.experiment_id
    return cached


def _forget_experiment(b: Backend, experiment_id: str) -> None:
    ids = _experiment_ids_cache.get(b, {})
    for name in [n for n, i in ids.items() if i == experiment_id]:
        ids.pop(name, None)


def set_experiment(name: str) -> Experiment:
    """The experiment with this name, created if it does not exist."""
    return _resolve_experiment(backend(), name)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    capture_source: bool | None = None,
) -> ActiveRun:
    """Start a run (or resume one) and make it the active one.

    The run's id is chosen here and the call returns at once: the run's creation travels
    with its first batch of logged values, and its end with the last, so a short run costs
    the backend one request.

    Args:
        experiment: experiment name (created if missing); default the "Default" experiment,
            or the parent's experiment for a nested run.
        name: run name; default a generated one such as ``swift-otter-417``.
        params, tags: logged at once.
        run_id: resume this existing run instead: logging goes on, its status is RUNNING
            again until it ends (``experiment``, ``name`` and ``parent_run_id`` must not be
            given with it).
        nested: make the currently active run the parent.
        parent_run_id: an explicit parent.
        capture_source: record git commit, diff, entry point and installed packages
            (default on; ``MODELYARD_CAPTURE_SOURCE=false`` turns it off).

    Returns:
        an :class:`ActiveRun`; use it in a ``with`` block so it ends FINISHED, FAILED or KILLED.

    Raises:
        InvalidArgument: a malformed name, tag, param, or parent id; ``run_id`` with
            ``experiment``, ``name`` or a parent. RunNotFound: ``run_id`` or the parent does
            not exist. InvalidState: ``run_id`` names a deleted run, or the experiment is
            deleted.
    """
    b = backend()
    stack = _stack()
    if nested and parent_run_id is None:
        if not stack:
            raise InvalidArgument("nested=True needs an active run to nest under",
                                  field="nested")
        parent_run_id = stack[-1].id
    if capture_source is None:
        capture_source = os.environ.get("MODELYARD_CAPTURE_SOURCE", "true").lower() not in (
            "0", "false", "no", "off")
    # Checked before anything is created or resumed: a bad tag or param starts no run.
    run_tags = {t.key: t.value for t in (validate_tag(Tag(k, as_text(val)))
                                         for k, val in (tags or {}).items())}
    run_params = {p.key: p.value for p in (validate_param(Param(k, as_text(val)))
                                           for k, val in (params or {}).items())}
    if run_id is not None:
        if experiment is not None or name is not None or parent_run_id is not None:
            raise InvalidArgument("run_id resumes an existing run: do not pass experiment, "
                                  "name, nested or parent_run_id with it", field="run_id")
        active = _resume(b, run_id, run_params)
    else:
        active = _new_run(b, stack, experiment, name, parent_run_id)
    with _lock:
        _open_runs[active.id] = active
    stack.append(active)
    if run_tags:
        active.set_tags(run_tags)
    if run_params:
        active.log_params(run_params)
    if capture_source:
        active.capture_source_in_background(argv0=sys.argv[0] if sys.argv else None,
                                            cwd=Path.cwd(), keep=set(run_tags))
    return active


def _new_run(b: Backend, stack: list[ActiveRun], experiment: str | None, name: str | None,
             parent_run_id: str | None) -> ActiveRun:
    parent = _open_runs.get(parent_run_id) if parent_run_id is not None else None
    if parent is not None:
        parent.wait_created()  # the server must know the parent before the child
    elif parent_run_id is not None:
        b.get_run(validate_run_id(parent_run_id, field="parent_run_id"))  # exists, now
    if experiment is None and parent_run_id is not None and stack:
        exp_id = stack[-1].experiment_id  # nested: the parent's experiment
    else:
        exp_id = _experiment_id(b, experiment)
    create = validate_new_run(NewRun(
        experiment_id=exp_id, run_name=new_run_name() if name is None else name,
        user_id=_user(), start_time=now_ms(), parent_run_id=parent_run_id,
    ))
    info = RunInfo(run_id=new_run_id(), experiment_id=create.experiment_id,
                   run_name=create.run_name, user_id=create.user_id, status=RunStatus.RUNNING,
                   start_time=create.start_time, end_time=None,
                   lifecycle_stage=LifecycleStage.ACTIVE, parent_run_id=create.parent_run_id)

    def refused(error: ModelyardError) -> None:  # a stale experiment id: look the name up again
        _forget_experiment(b, create.experiment_id)

    return ActiveRun(b, Run(info), create=create, on_end=_forget, on_create_refused=refused)


def _resume(b: Backend, run_id: str, params: dict[str, str]) -> ActiveRun:
    run = b.get_run(validate_run_id(run_id))
    if run.info.lifecycle_stage is not LifecycleStage.ACTIVE:
        raise InvalidState(f"run {run_id} is deleted; restore it before resuming it",
                           field="run_id")
    if run_id in _open_runs:
        raise InvalidState(f"run {run_id} is already active in this process", field="run_id")
    for key, value in params.items():
        held = run.params.get(key)
        if held is not None and held != value:
            raise ParamOverwrite(f"param {key!r} of run {run_id} is {held[:100]!r}; params are "
                                 f"immutable, refusing {value[:100]!r}", field=f"params.{key}")
    run = b.update_run(run_id, status=RunStatus.RUNNING.value)
    return ActiveRun(b, run, on_end=_forget)


def _forget(run: ActiveRun) -> None:
    with _lock:
        _open_runs.pop(run.id, None)
    stack = _stack()
    if run in stack:
        stack.remove(run)


def active_run() -> ActiveRun | None:
    """The innermost run started in this thread and not yet ended."""
    stack = _stack()
    return stack[-1] if stack else None


def end_run(status: str = "FINISHED") -> None:
    """End the active run (if any)."""
    run = active_run()
    if run is not None:
        run.end(status)


@atexit.register
def _end_open_runs() -> None:
    # A run left open at interpreter exit is flushed and ended, as MLflow does.
    for run in list(_open_runs.values()):
        try:
            run.end("FINISHED")
        except Exception as exc:  # exit must go on; say what was lost
            print(f"modelyard: could not finish run {run.id}: {exc}", file=sys.stderr)
    with _lock:
        backends = list(_backends.values())
        _backends.clear()
    for b in backends:
        b.close()


# ---------------------------------------------------------------------- reading


def _settle(run_id: str | None = None) -> None:
    """Reads see the runs started in this process: send their creations first, if still
    pending (a run's creation travels with its first batch). ``None``: every open run."""
    with _lock:
        if run_id is None:
            runs = list(_open_runs.values())
        else:
            runs = [_open_runs[run_id]] if run_id in _open_runs else []
    for run in runs:
        with contextlib.suppress(ModelyardError):  # a refused creation: the read says so
            run.wait_created()


def get_run(run_id: str) -> Run:
    """A run with its params, latest metric values (``.metrics``) and tags."""
    _settle(run_id)
    return backend().get_run(run_id)


def get_metric_history(run_id: str, key: str, max_points: int | None = None) -> list[Metric]:
    """One metric's points, ordered by step, timestamp and logging order.

    Args:
        max_points: None (default) for every point; else 2-100,000: at most that many points
            that keep the history's shape, for charts. Computed by the database: the first
            and last point, and per step bucket the smallest and largest value (so spikes,
            ``inf`` and ``-inf`` always show) and the first NaN. A history of at most
            ``max_points`` points comes back whole. See docs/metrics.md.
    Raises:
        RunNotFound: no such run (a key the run never logged gives ``[]``).
        InvalidArgument: ``max_points`` out of range (field ``max_points``).
    """
    _settle(run_id)
    return backend().get_metric_history(run_id, key, max_points=max_points)


def export_metric_history(run_id: str, key: str, dest: str | os.PathLike[str],
                          format: str = "csv") -> Path:
    """Stream one metric's full history into the file ``dest``, with constant memory.

    Args:
        format: ``"csv"`` (``step,timestamp,value``; values read back exactly with
            ``float()``) or ``"arrow"`` (Arrow IPC stream: ``pyarrow.ipc.open_stream``).
    Returns:
        the path written; it appears only once the whole history is in it.
    Raises:
        RunNotFound; InvalidArgument: a bad ``format`` (field ``format``) or ``dest`` that is
        a directory (field ``dest``).
    """
    fmt = parse_history_format(format)
    path = Path(dest)
    if path.is_dir():
        raise InvalidArgument(f"dest {str(path)!r} is a directory; name the file to write",
                              field="dest")
    _settle(run_id)
    backend().export_metric_history(run_id, key, path, format=fmt)
    return path


def _experiment_ids(b: Backend, experiment: str | Sequence[str] | None) -> list[str]:
    if experiment is None:
        return ["0"]
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    ids = []
    for name in names:
        ids.append(name if is_experiment_id(name) else b.get_experiment_by_name(name).experiment_id)
    return ids


def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int = 100,
    page_token: str | None = None,
    view: str = "active_only",
    *,
    experiments: Sequence[str] | None = None,
    search_all_experiments: bool = False,
    include_total: bool = False,
) -> Page[Run]:
    """Runs of one or more experiments (names or ids) matching a filter.

    Example: ``search_runs("churn", "metrics.acc > 0.9 and params.lr = '0.1'",
    order_by=["metrics.acc DESC"])``. Pass ``page_token=page.next_page_token`` for more.
    ``experiments=[...]`` (or a list as ``experiment``) searches several experiments with one
    filter, order and paging; ``search_all_experiments=True`` searches every one. Each run's
    ``info.experiment_id`` says where it is. ``include_total=True`` also sets ``page.total``
    to the number of runs matching in all.
    """
    b = backend()
    _settle()
    return b.search_runs(_scope(b, experiment, experiments, search_all_experiments),
                         filter=filter, order_by=order_by, view=view,
                         max_results=max_results, page_token=page_token,
                         include_total=include_total)


def count_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    view: str = "active_only",
    *,
    experiments: Sequence[str] | None = None,
    search_all_experiments: bool = False,
) -> int:
    """How many runs match (same arguments as :func:`search_runs`), without fetching them."""
    b = backend()
    _settle()
    return b.count_runs(_scope(b, experiment, experiments, search_all_experiments),
                        filter=filter, view=view)


def _scope(b: Backend, experiment: str | Sequence[str] | None,
           experiments: Sequence[str] | None, search_all: bool) -> list[str] | None:
    if search_all:
        if experiment is not None or experiments is not None:
            raise InvalidArgument("pass experiments or search_all_experiments=True, not both",
                                  field="experiments")
        return None
    if experiment is not None and experiments is not None:
        raise InvalidArgument("pass experiment or experiments, not both", field="experiments")
    return _experiment_ids(b, experiments if experiments is not None else experiment)


def collect_garbage(older_than: timedelta = timedelta(milliseconds=PURGE_AFTER_MS), *,
                    dry_run: bool = True,
                    abandoned_after: timedelta = timedelta(milliseconds=ABANDONED_AFTER_MS),
                    ) -> GcReport:
    """Purge the runs and experiments deleted longer ago than ``older_than`` (their metrics,
    params, tags and manifests) and free every blob no remaining run uses; also sweep what
    uploads that died left behind (idle for ``abandoned_after``). Safe beside uploads in
    flight. In server mode the server collects in its own database and blob store.

    Args:
        older_than: how long ago a deletion must be for its data to be purged.
        dry_run: True (the default) only reports what would be freed.
        abandoned_after: idle time after which upload sessions and temp files are abandoned.
    Returns:
        the report: runs, experiments, rows per table, blobs and bytes freed.
    Raises:
        InvalidArgument: an age that is not a non-negative ``timedelta``.
    """
    ages = {}
    for name, age in (("older_than", older_than), ("abandoned_after", abandoned_after)):
        if not isinstance(age, timedelta) or age < timedelta(0):
            raise InvalidArgument(f"{name} must be a non-negative datetime.timedelta",
                                  field=name)
        ages[name] = age // timedelta(milliseconds=1)
    return backend().collect_garbage(older_than_ms=ages["older_than"], dry_run=dry_run,
                                     abandoned_after_ms=ages["abandoned_after"])


def list_artifacts(run_id: str, path: str = "") -> list[ArtifactEntry]:
    """The run's artifact files at or below ``path`` (all by default), ordered by path."""
    _settle(run_id)
    return backend().list_artifacts(run_id, path)


def download_artifacts(run_id: str, path: str = "", dest: str | os.PathLike[str] = ".") -> Path:
    """Download one artifact file, or every file below a folder, into ``dest``.

    Returns:
        the local path of the file, or of the folder that mirrors ``path``.
    """
    b = backend()
    _settle(run_id)
    root = Path(dest)
    clean = normalize_artifact_path(path, allow_empty=True)
    entries = b.list_artifacts(run_id, clean)
    exact = [e for e in entries if e.path == clean]
    if exact:
        target = safe_join(root, clean.rsplit("/", 1)[-1])
        b.download_file(run_id, clean, target, digest=exact[0].digest)
        return target
    if not entries:
        raise ArtifactNotFound(f"run {run_id} has no artifact at {path!r}", field="path")
    # A few files at once; each is verified, and resumable after an interruption.
    run_parallel([functools.partial(b.download_file, run_id, entry.path,
                                    safe_join(root, entry.path), digest=entry.digest)
                  for entry in entries])
    return safe_join(root, clean) if clean else root.absolute()


# ---------------------------------------------------------------------- experiments & runs


def create_experiment(name: str, description: str = "",
                      tags: dict[str, str] | None = None) -> Experiment:
    return backend().create_experiment(name, description=description, tags=tags)


def get_experiment(experiment_id: str) -> Experiment:
    return backend().get_experiment(experiment_id)


def get_experiment_by_name(name: str) -> Experiment:
    return backend().get_experiment_by_name(name)


def list_experiments(view: str = "active_only", max_results: int = 1000,
                     page_token: str | None = None) -> Page[Experiment]:
    return backend().list_experiments(view=view, max_results=max_results,
                                      page_token=page_token)


def delete_experiment(experiment_id: str) -> None:
    backend().delete_experiment(experiment_id)


def restore_experiment(experiment_id: str, *, new_name: str | None = None) -> None:
    """Restore a deleted experiment and the runs deleted with it. If an active experiment took
    its name meanwhile this raises AlreadyExists; pass ``new_name`` to restore it renamed."""
    backend().restore_experiment(experiment_id, new_name=new_name)


def delete_run(run_id: str) -> None:
    _settle(run_id)
    backend().delete_run(run_id)


def restore_run(run_id: str) -> None:
    _settle(run_id)
    backend().restore_run(run_id)


