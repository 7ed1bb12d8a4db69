"""Frozen settings, read once at an entry point (cli, server) and passed down.

Nothing below the entry points reads ``os.environ``; they receive a :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DATA_DIR = "modelyard-data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'modelyard.db').as_posix()}"


def default_artifacts_url(data_dir: Path) -> str:
    return (data_dir / "artifacts").as_posix()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a server or an embedded backend needs to start.

    Args:
        db_url: SQLAlchemy URL of the metadata database (``sqlite:///...`` or ``postgresql://...``).
        artifacts_url: a local folder or any fsspec URL for the blob store.
        host, port, workers: where and how the server listens.
        max_request_bytes: the largest JSON body the server accepts.
        max_artifact_bytes: the largest artifact the server accepts, in one upload or one
            multipart session.
        min_body_rate, body_grace_s: a request body must arrive at ``min_body_rate`` bytes a
            second on average once ``body_grace_s`` seconds have passed.
        allowed_hosts: Host header values the server answers (DNS-rebinding protection).
        allowed_origins: web page origins (``https://ui.example.com``) besides the server's
            own that may send it requests that change data.
        direct_upload_body: take multipart upload parts straight from the socket into the
            staging file (Linux ``splice``), past uvicorn's body handling, which reads its
            private internals (checked at start-up); off: the ordinary ASGI stream.
    """

    db_url: str
    artifacts_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_request_bytes: int = 32 * 1024 * 1024
    max_artifact_bytes: int = 64 * 1024**3
    min_body_rate: int = 16 * 1024
    body_grace_s: float = 30.0
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    allowed_origins: tuple[str, ...] = ()
    direct_upload_body: bool = False

    @classmethod
    def for_data_dir(cls, data_dir: str | Path = DEFAULT_DATA_DIR) -> Settings:
        path = Path(data_dir).expanduser().absolute()
        return cls(db_url=default_db_url(path), artifacts_url=default_artifacts_url(path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``MODELYARD_*`` variables, then explicit overrides (non-None)."""
        env = os.environ if environ is None else environ
        base = cls.for_data_dir(env.get("MODELYARD_DATA_DIR", DEFAULT_DATA_DIR))
        values: dict[str, object] = {}
        if "MODELYARD_DB" in env:
            values["db_url"] = env["MODELYARD_DB"]
        if "MODELYARD_ARTIFACTS" in env:
            values["artifacts_url"] = env["MODELYARD_ARTIFACTS"]
        if "MODELYARD_ALLOWED_HOSTS" in env:
            values["allowed_hosts"] = tuple(
                h.strip() for h in env["MODELYARD_ALLOWED_HOSTS"].split(",") if h.strip()
            )
        if "MODELYARD_ALLOWED_ORIGINS" in env:
            values["allowed_origins"] = tuple(
                o.strip() for o in env["MODELYARD_ALLOWED_ORIGINS"].split(",") if o.strip()
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(base, **values)  # type: ignore[arg-type]
