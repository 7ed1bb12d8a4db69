"""``modelyard artifacts list|get|put``."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelyard.artifacts.paths import iter_local_tree, normalize_artifact_path, safe_join
from modelyard.backend.parallel import run_parallel
from modelyard.cli.common import MARKUP_MODE, console, err_console, handle_errors, print_json
from modelyard.cli.shared import about_run, cell, human_bytes, json_option, open_backend, say
from modelyard.cli.shared import uri_option as _uri
from modelyard.domain.entities import ArtifactEntry
from modelyard.errors import ArtifactNotFound, InvalidArgument

artifacts_app = typer.Typer(help="List, download and upload run artifacts.",
                            no_args_is_help=True, rich_markup_mode=MARKUP_MODE)

DIGEST_PREFIX = 12


@contextmanager
def _progress(verb: str, total_bytes: int, files: int) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar over bytes (with the file count), drawn on stderr."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TextColumn("{task.fields[done]}/{task.fields[files]} files"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True,
                  disable=not err_console.is_terminal) as progress:
        task = progress.add_task(verb, total=max(total_bytes, 1), done=0, files=files)
        yield progress, task


class _Tracker:
    """Byte and file counts for the bar, fed from several transfer threads at once."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._lock = threading.Lock()
        self._files = 0

    def bytes_moved(self, n: int) -> None:
        self._progress.update(self._task, advance=n)

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
            self._progress.update(self._task, done=self._files)


@artifacts_app.command("list")
@handle_errors
def list_artifacts(
    run_id: str = typer.Argument(..., help="The run id."),
    path: str = typer.Argument("", help="Only the file or folder at this artifact path."),
    as_json: bool = json_option(),
    uri: str | None = _uri(),
) -> None:
    """A run's artifact files: path, size and digest prefix."""
    with about_run(run_id):
        entries = open_backend(uri).list_artifacts(run_id, path)
    if not entries and normalize_artifact_path(path, allow_empty=True):
        raise ArtifactNotFound(f"run {run_id} has no artifact at {path!r}", field="path")
    if as_json:
        print_json([{"path": e.path, "size": e.size, "digest": e.digest} for e in entries])
        return
    if not entries:
        say(f"run {run_id} has no artifacts")
        return
    table = Table(box=None, header_style="bold", show_footer=True)
    files = f"{len(entries)} file{'s' if len(entries) != 1 else ''}"
    table.add_column("path", footer=files, overflow="fold")
    table.add_column("size", justify="right", no_wrap=True,
                     footer=human_bytes(sum(e.size for e in entries)))
    table.add_column("digest", no_wrap=True, style="dim")
    for e in entries:
        table.add_row(cell(e.path), human_bytes(e.size), cell(e.digest[:DIGEST_PREFIX]))
    console.print(table)


@artifacts_app.command("get")
@handle_errors
def get_artifacts(
    run_id: str = typer.Argument(..., help="The run id."),
    path: str = typer.Argument(..., help="Artifact file or folder ('.' for everything)."),
    dest: Path = typer.Option(Path("."), "--dest", "-d",  # noqa: B008
                              help="Local folder to download into."),
    uri: str | None = _uri(),
) -> None:
    """Download one artifact file, or every file below a folder, into DEST."""
    b = open_backend(uri)
    clean = normalize_artifact_path(path, allow_empty=True)
    with about_run(run_id):
        entries = b.list_artifacts(run_id, clean)
    if not entries:
        raise ArtifactNotFound(f"run {run_id} has no artifact at {path!r}", field="path")
    if dest.exists() and not dest.is_dir():
        raise InvalidArgument(f"--dest {str(dest)!r} is not a directory", field="dest")
    exact = [e for e in entries if e.path == clean]
    plan: list[tuple[ArtifactEntry, Path]]
    if exact:
        plan = [(exact[0], safe_join(dest, clean.rsplit("/", 1)[-1]))]
        result = plan[0][1]
    else:
        plan = [(e, safe_join(dest, e.path)) for e in entries]
        result = safe_join(dest, clean) if clean else dest.resolve()
    total = sum(e.size for e, _ in plan)
    with _progress("downloading", total, len(plan)) as (progress, task):
        tracker = _Tracker(progress, task)

        def fetch(entry: ArtifactEntry, target: Path) -> None:
            # Verified; an interrupted download resumes with HTTP Range when run again.
            b.download_file(run_id, entry.path, target, digest=entry.digest,
                            on_progress=tracker.bytes_moved)
            tracker.file_done()

        run_parallel([functools.partial(fetch, entry, target) for entry, target in plan])
    say(f"downloaded {len(plan)} file{'s' if len(plan) != 1 else ''} "
        f"({human_bytes(total)}) to {result}")


def _upload_plan(local: Path, folder: str) -> list[tuple[str, Path]]:
    def join(name: str) -> str:
        return normalize_artifact_path(f"{folder}/{name}" if folder else name)

    if local.is_dir():
        plan = [(join(rel), file) for rel, file in iter_local_tree(local)]
        if not plan:
            raise InvalidArgument(f"{str(local)!r} holds no files to upload", field="local_path")
        return plan
    if local.is_file():
        return [(join(local.name), local)]
    if not local.exists():
        raise ArtifactNotFound(f"{str(local)!r} does not exist", field="local_path")
    raise InvalidArgument(f"{str(local)!r} is neither a regular file nor a directory",
                          field="local_path")


@artifacts_app.command("put")
@handle_errors
def put_artifacts(
    run_id: str = typer.Argument(..., help="The run id."),
    local_path: Path = typer.Argument(..., help="A local file or directory."),  # noqa: B008
    path: str = typer.Option("", "--path", "-p",
                             help="Artifact folder to store under (default: the root)."),
    uri: str | None = _uri(),
) -> None:
    """Upload a file, or every file below a directory, into a run's artifacts.

    A directory's symlinks are followed only when they stay inside it. Against a server, a
    few files go at once and large ones in resumable parts (run the same put again after an
    interruption and it sends only what is missing).
    """
    b = open_backend(uri)
    folder = normalize_artifact_path(path, allow_empty=True)
    plan = _upload_plan(local_path, folder)  # the whole tree is checked before any upload
    with about_run(run_id):
        b.get_run(run_id)  # refuse an unknown run before reading any bytes
    total = sum(file.stat().st_size for _, file in plan)
    with _progress("uploading", total, len(plan)) as (progress, task):
        tracker = _Tracker(progress, task)

        def send(dest: str, file: Path) -> None:
            # Large files go in resumable parts: a put interrupted and run again sends only
            # the parts the server does not hold yet.
            b.upload_file(run_id, dest, file, on_progress=tracker.bytes_moved)
            tracker.file_done()

        with about_run(run_id):
            run_parallel([functools.partial(send, dest, file) for dest, file in plan])
    where = f" under {folder!r}" if folder else ""
    say(f"uploaded {len(plan)} file{'s' if len(plan) != 1 else ''} "
        f"({human_bytes(total)}) to run {run_id}{where}")
