"""``modelyard server`` and ``modelyard db upgrade``."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os

import typer

from modelyard.cli.common import MARKUP_MODE, console, err_console, handle_errors
from modelyard.cli.safe_text import safe_text
from modelyard.cli.shared import say
from modelyard.errors import InvalidArgument
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
        [], help="Extra Host header value to answer (repeatable); loopback names always are. "
                 "'*' answers any Host: a web page can then reach the server by DNS rebinding."
    ),
    allowed_origin: list[str] = typer.Option(  # noqa: B008
        [], help="Web page origin (such as https://ui.example.com) besides the server's own "
                 "that may send requests that change data (repeatable)."
    ),
    max_artifact_bytes: int | None = typer.Option(
        None, min=1, help="Largest artifact accepted, in one upload or one multipart session "
                          "(default 64 GiB)."),
    min_body_rate: int | None = typer.Option(
        None, min=1, help="Bytes a second a request body must average after 30 s (default "
                          "16384); slower bodies are cut off with 408."),
    direct_upload_body: bool = typer.Option(
        False, "--direct-upload-body",
        help="Take multipart upload parts straight from the socket into the staging file "
             "(Linux splice) past uvicorn's body handling, closing the connection after each "
             "part. Helps when the network and disk outpace uvicorn (loopback, local disk: "
             "30-40% faster uploads). It reads uvicorn's private internals, checked at start: "
             "if they differ, a warning and the ordinary stream."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth",
        help="Allow binding an address other than loopback although the server has no "
             "authentication yet: anyone who can reach it can read and delete everything."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Start the tracking server (REST API under /api/v1, OpenAPI at /openapi.json)."""
    import uvicorn

    from modelyard.server.app import SETTINGS_ENV, create_app
    from modelyard.stores.sql import open_sql_stores

    if not is_loopback(host) and not insecure_no_auth:
        raise InvalidArgument(
            f"--host {host} would make the server reachable from other machines, and it has "
            "no authentication yet: anyone who reaches it could read and delete every run and "
            "artifact. Bind 127.0.0.1 (the default) and put an authenticating proxy in front, "
            "or pass --insecure-no-auth to accept that risk on a network you trust",
            field="host")
    base = settings_from_flags(db, artifacts, data_dir, max_artifact_bytes=max_artifact_bytes,
                               min_body_rate=min_body_rate)
    hosts = tuple(dict.fromkeys([*base.allowed_hosts, *allowed_host,
                                 *([host] if host not in ("0.0.0.0", "::") else [])]))  # noqa: S104
    origins = tuple(dict.fromkeys([*base.allowed_origins, *allowed_origin]))
    settings = dataclasses.replace(base, host=host, port=port, workers=workers,
                                   allowed_hosts=hosts, allowed_origins=origins,
                                   direct_upload_body=direct_upload_body)
    # Check (or create) the schema once, before any worker starts: a clear refusal here.
    open_sql_stores(settings.db_url).close()
    say(f"modelyard server on http://{host}:{port}  db={_safe(settings.db_url)}  "
        f"artifacts={settings.artifacts_url}")
    for warning in startup_warnings(settings, insecure_no_auth=insecure_no_auth):
        err_console.print(safe_text(f"warning: {warning}"), soft_wrap=True)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    access_log=False)
        return
    data = dataclasses.asdict(settings)
    os.environ[SETTINGS_ENV] = json.dumps(data)
    uvicorn.run("modelyard.server.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, access_log=False)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def startup_warnings(settings: Settings, *, insecure_no_auth: bool) -> list[str]:
    """What the operator should know about a configuration the server accepts."""
    from modelyard.tracking.data_permissions import permission_warnings

    warnings = permission_warnings(settings)
    if "*" in settings.allowed_hosts:
        warnings.append("--allowed-host '*' answers any Host header: a web page on any site "
                        "can reach this server through DNS rebinding")
    if insecure_no_auth and not is_loopback(settings.host):
        warnings.append(f"listening on {settings.host} without authentication "
                        "(--insecure-no-auth): anyone who can reach it can read and delete "
                        "everything")
    return warnings


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
