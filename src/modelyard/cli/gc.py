"""``modelyard gc``: purge soft-deleted runs and experiments, then free unreferenced blobs.

It works on the database and the blob store directly (never through a server): run it where
the operator's configuration is, like ``modelyard db upgrade``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer

from modelyard.cli.common import handle_errors, print_json
from modelyard.cli.server import ARTIFACTS_HELP, DATA_HELP, DB_HELP, settings_from_flags
from modelyard.cli.shared import human_bytes, json_option, say
from modelyard.errors import InvalidArgument

DRY_RUN_NOTE = "dry run: nothing was changed; pass --no-dry-run to free it"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000}
_DURATION_RE = re.compile(r"(\d{1,12})\s*(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
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
            f"--older-than {text!r} is not a duration; use a whole number and a unit "
            "(ms, s, m, h, d or w), e.g. 0s, 90m, 12h or 30d", field="older_than")
    return total


def _check_database_exists(db_url: str) -> None:
    """Refuse a SQLite file that is not there, rather than create an empty database."""
    from sqlalchemy.engine import make_url

    from modelyard.stores.sql.engine import normalize_db_url

    url = make_url(normalize_db_url(db_url))
    path = url.database
    if url.get_backend_name() == "sqlite" and path not in (None, "", ":memory:") \
            and not Path(str(path)).is_file():
        raise InvalidArgument(f"no modelyard database at {path!r}; pass --db or --data-dir",
                              field="db")


@handle_errors
def gc(
    older_than: str = typer.Option("30d", "--older-than",
                                   help="Purge what was deleted longer ago than this "
                                        "(0s, 90m, 12h, 30d, 2w)."),
    dry_run: bool = typer.Option(True, "--dry-run/--no-dry-run",
                                 help="Only report what would be freed (the default)."),
    db: str | None = typer.Option(None, help=DB_HELP),
    artifacts: str | None = typer.Option(None, help=ARTIFACTS_HELP),
    data_dir: str | None = typer.Option(None, help=DATA_HELP),
    as_json: bool = json_option(),
) -> None:
    """Purge soft-deleted runs and experiments and free the blobs no run uses any more."""
    from modelyard.artifacts.blobs import FsspecBlobStore
    from modelyard.stores.sql import open_sql_stores
    from modelyard.tracking.gc import collect_garbage

    older_than_ms = parse_duration(older_than)
    settings = settings_from_flags(db, artifacts, data_dir)
    _check_database_exists(settings.db_url)
    stores = open_sql_stores(settings.db_url, create_if_empty=False)
    try:
        report = collect_garbage(stores.maintenance, FsspecBlobStore(settings.artifacts_url),
                                 older_than_ms=older_than_ms, now_ms=int(time.time() * 1000),
                                 dry_run=dry_run)
    finally:
        stores.close()
    if as_json:
        print_json({"runs": list(report.runs), "experiments": list(report.experiments),
                    "blobs": report.blobs, "bytes_freed": report.bytes_freed,
                    "dry_run": report.dry_run})
        return
    verb = "would purge" if report.dry_run else "purged"
    say(f"{verb} {len(report.runs)} run{'s' if len(report.runs) != 1 else ''} and "
        f"{len(report.experiments)} experiment{'s' if len(report.experiments) != 1 else ''}")
    for exp_id in report.experiments:
        say(f"  experiment {exp_id}")
    for run_id in report.runs:
        say(f"  run {run_id}")
    freed = "would free" if report.dry_run else "freed"
    say(f"{freed} {report.blobs} blob{'s' if report.blobs != 1 else ''} "
        f"({human_bytes(report.bytes_freed)})")
    if report.dry_run:
        say(DRY_RUN_NOTE)
