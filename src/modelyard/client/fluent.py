"""Module-level logging calls that act on the active run, as ``mlflow.log_metric`` does.

``modelyard.log_metric("loss", 0.3)`` is ``modelyard.active_run().log_metric("loss", 0.3)``;
without an active run in this thread it raises InvalidState naming ``start_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelyard.client.api import active_run
from modelyard.client.run import ActiveRun
from modelyard.errors import InvalidState


def _active(call: str) -> ActiveRun:
    run = active_run()
    if run is None:
        raise InvalidState(f"modelyard.{call}() needs an active run: start one with "
                           "modelyard.start_run() (or `with modelyard.start_run(): ...`)",
                           field="run")
    return run


def log_metric(key: str, value: float, step: int | None = None,
               timestamp: int | None = None) -> None:
    """Log one metric point to the active run (see :meth:`ActiveRun.log_metric`)."""
    _active("log_metric").log_metric(key, value, step, timestamp)


def log_metrics(metrics: dict[str, float], step: int | None = None,
                timestamp: int | None = None) -> None:
    """Log several metrics at one step to the active run."""
    _active("log_metrics").log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> None:
    """Log a param (stored as ``str(value)``; immutable) to the active run."""
    _active("log_param").log_param(key, value)


def log_params(params: dict[str, Any]) -> None:
    """Log several params to the active run."""
    _active("log_params").log_params(params)


def set_tag(key: str, value: Any) -> None:
    """Set a tag (stored as ``str(value)``) on the active run."""
    _active("set_tag").set_tag(key, value)


def set_tags(tags: dict[str, Any]) -> None:
    """Set several tags on the active run."""
    _active("set_tags").set_tags(tags)


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> str:
    """Upload one file into the active run's artifacts, under folder ``artifact_path``.

    Returns:
        the artifact path it was stored at.
    """
    return _active("log_artifact").log_artifact(local_path, artifact_path)


def log_artifacts(local_dir: str | Path, artifact_path: str | None = None) -> list[str]:
    """Upload every file below ``local_dir`` into the active run, under ``artifact_path``."""
    return _active("log_artifacts").log_artifacts(local_dir, artifact_path)


def log_text(text: str, artifact_file: str) -> str:
    """Store ``text`` as the artifact file ``artifact_file`` of the active run."""
    return _active("log_text").log_text(text, artifact_file)


def log_dict(dictionary: dict[str, Any], artifact_file: str) -> str:
    """Store ``dictionary`` as JSON in the artifact file ``artifact_file`` of the active run."""
    return _active("log_dict").log_dict(dictionary, artifact_file)
