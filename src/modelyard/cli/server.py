"""``modelyard server`` and ``modelyard db upgrade``."""

from __future__ import annotations

import dataclasses
import json
import os

import typer

from modelyard.cli.common import MARKUP_MODE, console, handle_errors
from modelyard.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

db_app = typer.Typer(help="Database schema management.", no_args_is_help=True,
                     rich_markup_mode=MARKUP_MODE)

DB_HELP = "Metadata database URL (sqlite:///path.db or postgresql://...)."
ARTIFACTS_HELP = "Artifact store: a folder or an fsspec URL such as s3://bucket/prefix."
DATA_HELP = "Data folder for the embedded defaults (DB file and artifact folder)."


def settings_from_flags(db: str | None, artifacts: str | None, data_dir: str | None,
                        **extra: object) -> Settings:
    env = dict(os.environ)
    if data_dir is not None:
        env["MODELYARD_DATA_DIR"] = data_dir
    return Settings.from_env(env, db_url=db, artifacts_url=artifacts, **extra)


@handle_errors
def server(
    host: str = typer.Option(DEFAULT_HOST, help="Interface to bind."),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on."),
    db: str | None = typer.Option(None, help=DB_HELP),
    artifacts: str | None = typer.Option(None, help=ARTIFACTS_HELP),
    data_dir: str | None = typer.Option(None, help=DATA_HELP),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
    allowed_host: list[str] = typer.Option(  # noqa: B008
        [], help="Extra Host header value to answer (repeatable); loopback names always are."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Start the tracking server (REST API under /api/v1, OpenAPI at /openapi.json)."""
    import uvicorn

    from modelyard.server.app import SETTINGS_ENV, create_app
    from modelyard.stores.sql import open_sql_stores

    base = settings_from_flags(db, artifacts, data_dir)
    hosts = tuple(dict.fromkeys([*base.allowed_hosts, *allowed_host,
                                 *([host] if host not in ("0.0.0.0", "::") else [])]))  # noqa: S104
    settings = dataclasses.replace(base, host=host, port=port, workers=workers,
                                   allowed_hosts=hosts)
    # Check (or create) the schema once, before any worker starts: a clear refusal here.
    open_sql_stores(settings.db_url).close()
    console.print(f"modelyard server on http://{host}:{port}  db={_safe(settings.db_url)}  "
                  f"artifacts={settings.artifacts_url}", highlight=False)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    access_log=False)
        return
    data = dataclasses.asdict(settings)
    os.environ[SETTINGS_ENV] = json.dumps(data)
    uvicorn.run("modelyard.server.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, access_log=False)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    from modelyard.stores.sql.engine import normalize_db_url

    try:
        return make_url(normalize_db_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable>"


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    db: str | None = typer.Option(None, help=DB_HELP),
    data_dir: str | None = typer.Option(None, help=DATA_HELP),
) -> None:
    """Upgrade the database schema to the version this modelyard needs."""
    from modelyard.stores.sql.engine import make_engine
    from modelyard.stores.sql.migrate import HEAD_REVISION, current_revision, upgrade

    settings = settings_from_flags(db, None, data_dir)
    engine = make_engine(settings.db_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        console.print(f"schema at {HEAD_REVISION} (was {before or 'empty'})")
    finally:
        engine.dispose()
