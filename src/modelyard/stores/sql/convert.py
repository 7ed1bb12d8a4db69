"""Rows to domain entities (rows never leave this package)."""

from __future__ import annotations

import math
from typing import Any

from modelyard.domain.entities import Experiment, LifecycleStage, Metric, RunInfo, RunStatus


def metric_value(value: float | None, is_nan: bool) -> float:
    return math.nan if is_nan or value is None else float(value)


def to_metric(row: Any) -> Metric:
    return Metric(row.key, metric_value(row.value, row.is_nan), int(row.step), int(row.timestamp))


def to_run_info(row: Any) -> RunInfo:
    return RunInfo(
        run_id=row.run_id,
        experiment_id=str(row.experiment_id),
        run_name=row.run_name,
        user_id=row.user_id,
        status=RunStatus(row.status),
        start_time=int(row.start_time),
        end_time=None if row.end_time is None else int(row.end_time),
        lifecycle_stage=LifecycleStage(row.lifecycle_stage),
        parent_run_id=row.parent_run_id,
        deleted_time=row.deleted_time,
    )


def to_experiment(row: Any, tags: dict[str, str]) -> Experiment:
    return Experiment(
        experiment_id=str(row.experiment_id),
        name=row.name,
        description=row.description,
        lifecycle_stage=LifecycleStage(row.lifecycle_stage),
        creation_time=int(row.creation_time),
        last_update_time=int(row.last_update_time),
        tags=tags,
        deleted_time=row.deleted_time,
    )
