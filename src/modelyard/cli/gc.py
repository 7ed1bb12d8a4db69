"""``modelyard gc``: purge soft-deleted runs and experiments, free unreferenced blobs, sweep
abandoned uploads.

``--uri`` means what it means in every command: ``--uri http(s)://...`` has the server
collect in its own stores, ``--uri FOLDER`` works on that data folder. Otherwise it works on
the database and the blob store directly, where the operator's configuration is (like
``modelyard db upgrade``: ``--db``/``--artifacts``/``--data-dir``, ``MODELYARD_*``). Uploads
in flight are safe (``tracking/gc.py``); each collection writes one line to the
``modelyard.audit`` logger (the server's, through a server).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from modelyard.backend.protocol import Backend
from modelyard.cli.common import handle_errors, print_json
from modelyard.cli.server import ARTIFACTS_HELP, DATA_HELP, DB_HELP, settings_from_flags
from modelyard.cli.shared import (
    data_folder,
    human_bytes,
    is_server_url,
    json_option,
    say,
    uri_option,
)
from modelyard.domain.retention import ABANDONED_AFTER_MS, DAY_MS, PURGE_AFTER_MS
from modelyard.errors import InvalidArgument
from modelyard.settings import Settings
from modelyard.tracking.gc import GcReport

DRY_RUN_NOTE = "dry run: nothing was changed; pass --no-dry-run to free it"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000}
_DURATION_RE = re.compile(r"(\d{1,12})\s*(ms|s|m|h|d|w)")


def parse_duration(text: str, *, option: str = "--older-than") -> int:
    """``0s``, ``90m``, ``12h``, ``30d``, ``2w`` (also ``1d12h``) → milliseconds.

    Raises:
        InvalidArgument: anything else (a bare number, a negative or fractional value, ...).
    """
    cleaned = text.strip().lower()
    pos = 0
    total = 0
    for match in _DURATION_RE.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise InvalidArgument(
            f"{option} {text!r} is not a duration; use a whole number and a unit "
            "(ms, s, m, h, d or w), e.g. 0s, 90m, 12h or 30d",
            field=option.removeprefix("--").replace("-", "_"))
    return total


def _check_database_exists(db_url: str, *, hint: str = "pass --db or --data-dir") -> None:
    """Refuse a SQLite file that is not there, rather than create an empty database."""
    from sqlalchemy.engine import make_url

    from modelyard.stores.sql.engine import normalize_db_url

    url = make_url(normalize_db_url(db_url))
    path = url.database
    if url.get_backend_name() == "sqlite" and path not in (None, "", ":memory:") \
            and not Path(str(path)).is_file():
        raise InvalidArgument(f"no modelyard database at {path!r}; {hint}", field="db")


@contextmanager
def _audit_to_stderr() -> Iterator[None]:
    """Show the audit line on stderr unless the application configured that logger."""
    logger = logging.getLogger("modelyard.audit")
    if logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("audit: %(message)s"))
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _gc_backend(uri: str | None, uri_from_env: bool, db: str | None, artifacts: str | None,
                data_dir: str | None) -> Backend:
    """The stores to collect in.

    ``--uri`` means what it means in every command: a server URL collects through that server,
    a folder on that embedded data folder. ``--db``/``--artifacts``/``--data-dir`` name the
    stores directly (and win over ``MODELYARD_URI``); with neither, the ``MODELYARD_*``
    settings or ``./modelyard-data``.
    """
    from modelyard.backend.local import LocalBackend

    if uri is not None and any(flag is not None for flag in (db, artifacts, data_dir)):
        if not uri_from_env:
            raise InvalidArgument("pass --uri or --db/--artifacts/--data-dir, not both",
                                  field="uri")
        uri = None
    if uri is None:
        settings = settings_from_flags(db, artifacts, data_dir)
        _check_database_exists(settings.db_url)
        return LocalBackend(settings, create_if_empty=False)
    if is_server_url(uri):
        from modelyard.backend.remote import RemoteBackend

        return RemoteBackend(uri)
    settings = Settings.for_data_dir(data_folder(uri))
    _check_database_exists(settings.db_url, hint="pass --uri (a data folder or an http(s):// "
                                                  "server URL) or set MODELYARD_URI")
    return LocalBackend(settings, create_if_empty=False)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _say_report(report: GcReport) -> None:
    verb = "would purge" if report.dry_run else "purged"
    rows = ", ".join(f"{table} {n}" for table, n in report.rows.items() if n)
    say(f"{verb} {_plural(len(report.runs), 'run')} and "
        f"{_plural(len(report.experiments), 'experiment')} "
        f"({_plural(report.rows_freed, 'row')}{': ' + rows if rows else ''})")
    for exp_id in report.experiments:
        say(f"  experiment {exp_id}")
    for run_id in report.runs:
        say(f"  run {run_id}")
    freed = "would free" if report.dry_run else "freed"
    say(f"{freed} {_plural(report.blobs, 'blob')} ({human_bytes(report.bytes_freed)})")
    if report.blobs_kept:
        say(f"kept {_plural(report.blobs_kept, 'blob')} an upload in flight took meanwhile")
    sweep = "would sweep" if report.dry_run else "swept"
    say(f"{sweep} {_plural(report.uploads, 'abandoned upload')} "
        f"({human_bytes(report.upload_bytes)}), {_plural(report.temp_files, 'temp file')} "
        f"({human_bytes(report.temp_bytes)}) and {_plural(report.leases, 'stale lease')}")
    if report.dry_run:
        say(DRY_RUN_NOTE)


@handle_errors
def gc(
    ctx: typer.Context,
    older_than: str = typer.Option(f"{PURGE_AFTER_MS // DAY_MS}d", "--older-than",
                                   help="Purge what was deleted longer ago than this "
                                        "(0s, 90m, 12h, 30d, 2w)."),
    dry_run: bool = typer.Option(True, "--dry-run/--no-dry-run",
                                 help="Only report what would be freed (the default)."),
    abandoned_after: str = typer.Option(
        f"{ABANDONED_AFTER_MS // DAY_MS}d", "--abandoned-after",
        help="Uploads, temp files and leases idle this long belong to clients that died."),
    db: str | None = typer.Option(None, help=DB_HELP),
    artifacts: str | None = typer.Option(None, help=ARTIFACTS_HELP),
    data_dir: str | None = typer.Option(None, help=DATA_HELP),
    uri: str | None = uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Purge soft-deleted runs and experiments, free the blobs no run uses any more, and sweep
    what interrupted uploads left behind. Safe while uploads are in flight.

    It works on the stores named by --uri (a data folder, or a server that then collects in
    its own stores) or by --db/--artifacts/--data-dir.
    """
    older_than_ms = parse_duration(older_than)
    abandoned_ms = parse_duration(abandoned_after, option="--abandoned-after")
    source = ctx.get_parameter_source("uri")
    from_env = source is not None and source.name == "ENVIRONMENT"  # MODELYARD_URI
    backend = _gc_backend(uri, from_env, db, artifacts, data_dir)
    try:
        with _audit_to_stderr():
            report = backend.collect_garbage(older_than_ms=older_than_ms, dry_run=dry_run,
                                             abandoned_after_ms=abandoned_ms)
    finally:
        backend.close()
    if as_json:
        print_json(report.to_json())
        return
    _say_report(report)
