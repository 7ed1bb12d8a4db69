"""JSON request schemas (pydantic v2) and the domain <-> JSON conversions of responses.

Metric values travel as JSON numbers, or as the strings "NaN", "Infinity" and "-Infinity",
which JSON itself cannot express.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    LogBatch,
    Metric,
    NewRun,
    Run,
    RunEnd,
    RunInfo,
    RunStatus,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.retention import ABANDONED_AFTER_MS, PURGE_AFTER_MS
from modelyard.domain.validation import (
    MAX_BATCH_ARTIFACTS,
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS,
    MAX_BATCH_TAGS,
    MAX_CREATE_TAGS,
    MAX_INT64,
    MAX_ORDER_BY,
    MAX_SEARCH_EXPERIMENTS,
    MIN_INT64,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Float = Annotated[float, Field(allow_inf_nan=True)]
# Every integer is range-checked: what a database column holds (int64), or a size or age.
Int64 = Annotated[StrictInt, Field(ge=MIN_INT64, le=MAX_INT64)]
NonNegative = Annotated[StrictInt, Field(ge=0, le=MAX_INT64)]

def _documented_max(count: int, keyword: str = "maxItems") -> Any:
    """A count limit the document states and the domain enforces (a 400 naming the limit, in
    both modes), not pydantic (a 422)."""
    return Field(json_schema_extra={keyword: count})


Tags = Annotated[dict[StrictStr, StrictStr], _documented_max(MAX_CREATE_TAGS, "maxProperties")]


class MetricIn(_Strict):
    key: StrictStr
    # JSON has no NaN or infinities: they travel as these three strings.
    value: Float | StrictInt | Literal["NaN", "Infinity", "-Infinity"]
    step: Int64 = 0
    timestamp: Int64


class KeyValueIn(_Strict):
    key: StrictStr
    value: StrictStr


class CreateExperimentIn(_Strict):
    name: StrictStr
    description: StrictStr = ""
    tags: Tags = {}


class UpdateExperimentIn(_Strict):
    name: StrictStr | None = None
    description: StrictStr | None = None


class RestoreExperimentIn(_Strict):
    new_name: StrictStr | None = None


class CreateRunIn(_Strict):
    run_id: StrictStr | None = None  # the client's (32 lowercase hex); omitted: the server's
    experiment_id: StrictStr
    run_name: StrictStr | None = None
    user_id: StrictStr = "unknown"
    start_time: Int64 | None = None
    tags: Tags = {}
    parent_run_id: StrictStr | None = None


class UpdateRunIn(_Strict):
    status: StrictStr | None = None
    end_time: Int64 | None = None
    run_name: StrictStr | None = None


class RunCreateIn(_Strict):
    """Create the run (the id in the URL, chosen by the client) before the batch is written;
    repeating it with the same values (a retry) is accepted."""

    experiment_id: StrictStr
    run_name: StrictStr
    user_id: StrictStr = "unknown"
    start_time: Int64
    parent_run_id: StrictStr | None = None


class RunEndIn(_Strict):
    """End the run after the batch is written."""

    status: StrictStr  # FINISHED, FAILED or KILLED
    end_time: Int64


class StoredArtifactIn(_Strict):
    """Name a blob the server already holds (by its BLAKE3 digest) as an artifact of the run:
    an upload skipped because the content is stored. Refused (404) when it is not."""

    path: StrictStr
    digest: StrictStr
    size: NonNegative


class LogBatchIn(_Strict):
    """Documents the log-batch body in OpenAPI; ``wire.batch`` parses it on the hot path."""

    batch_id: StrictStr | None = None
    create: RunCreateIn | None = None
    metrics: Annotated[list[MetricIn], _documented_max(MAX_BATCH_METRICS)] = []
    params: Annotated[list[KeyValueIn], _documented_max(MAX_BATCH_PARAMS)] = []
    tags: Annotated[list[KeyValueIn], _documented_max(MAX_BATCH_TAGS)] = []
    artifacts: Annotated[list[StoredArtifactIn], _documented_max(MAX_BATCH_ARTIFACTS)] = []
    end: RunEndIn | None = None


ExperimentIds = Annotated[list[StrictStr], _documented_max(MAX_SEARCH_EXPERIMENTS)]


class SearchRunsIn(_Strict):
    experiment_ids: ExperimentIds | None = None  # omitted: every experiment
    filter: StrictStr | None = None
    order_by: Annotated[list[StrictStr], _documented_max(MAX_ORDER_BY)] = []
    view: StrictStr = "active_only"
    max_results: Int64 = 1000
    page_token: StrictStr | None = None
    include_total: StrictBool = False


class CountRunsIn(_Strict):
    experiment_ids: ExperimentIds | None = None
    filter: StrictStr | None = None
    view: StrictStr = "active_only"


class CollectGarbageIn(_Strict):
    older_than_ms: NonNegative = PURGE_AFTER_MS
    dry_run: StrictBool = True
    abandoned_after_ms: NonNegative = ABANDONED_AFTER_MS


class CreateUploadIn(_Strict):
    """Open a resumable multipart upload of ``size`` bytes to artifact ``path``."""

    path: StrictStr
    size: NonNegative
    part_size: NonNegative | None = None
    digest: StrictStr | None = None  # BLAKE3 hex of the whole file, checked at completion


class CompleteUploadIn(_Strict):
    digest: StrictStr | None = None


# ---------------------------------------------------------------------- responses (dicts)


def float_to_json(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def float_from_json(value: float | int | str) -> float:
    return float(value)  # float() reads "NaN", "Infinity" and "-Infinity"


def batch_to_json(batch: LogBatch, batch_id: str | None, *, create: NewRun | None = None,
                  end: RunEnd | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch_id": batch_id,
        "metrics": [
            {"key": m.key, "value": float_to_json(m.value), "step": m.step,
             "timestamp": m.timestamp}
            for m in batch.metrics
        ],
        "params": [{"key": p.key, "value": p.value} for p in batch.params],
        "tags": [{"key": t.key, "value": t.value} for t in batch.tags],
    }
    if batch.artifacts:
        body["artifacts"] = [artifact_to_json(a) for a in batch.artifacts]
    if create is not None:
        body["create"] = {"experiment_id": create.experiment_id, "run_name": create.run_name,
                          "user_id": create.user_id, "start_time": create.start_time,
                          "parent_run_id": create.parent_run_id}
    if end is not None:
        body["end"] = {"status": end.status.value, "end_time": end.end_time}
    return body


def metric_to_json(m: Metric) -> dict[str, Any]:
    return {"key": m.key, "value": float_to_json(m.value), "step": m.step,
            "timestamp": m.timestamp}


def metric_from_json(d: dict[str, Any]) -> Metric:
    return Metric(d["key"], float_from_json(d["value"]), int(d["step"]), int(d["timestamp"]))


def history_to_json(key: str, points: list[Metric]) -> dict[str, Any]:
    """A metric history as parallel arrays: far cheaper to encode and decode than objects."""
    return {
        "key": key,
        "steps": [m.step for m in points],
        "timestamps": [m.timestamp for m in points],
        "values": [v if v - v == 0 else float_to_json(v) for v in (m.value for m in points)],
    }


def history_pages_to_json(key: str, pages: Iterable[HistoryColumns]) -> dict[str, Any]:
    """The same answer as :func:`history_to_json`, built from column pages (no Metric objects
    for a history that may hold millions of points)."""
    steps: list[int] = []
    timestamps: list[int] = []
    values: list[float | str] = []
    for page in pages:
        steps += page.steps.tolist()
        timestamps += page.timestamps.tolist()
        values.extend(v if v - v == 0 else float_to_json(v) for v in page.values.tolist())
    return {"key": key, "steps": steps, "timestamps": timestamps, "values": values}


def history_from_json(d: dict[str, Any]) -> list[Metric]:
    key = d["key"]
    return [
        Metric(key, v if isinstance(v, float) else float(v), step, ts)
        for step, ts, v in zip(d["steps"], d["timestamps"], d["values"], strict=True)
    ]


def experiment_to_json(e: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "description": e.description,
        "lifecycle_stage": e.lifecycle_stage.value,
        "creation_time": e.creation_time,
        "last_update_time": e.last_update_time,
        "deleted_time": e.deleted_time,
        "tags": dict(e.tags),
    }


def experiment_from_json(d: dict[str, Any]) -> Experiment:
    return Experiment(
        experiment_id=d["experiment_id"],
        name=d["name"],
        description=d["description"],
        lifecycle_stage=LifecycleStage(d["lifecycle_stage"]),
        creation_time=d["creation_time"],
        last_update_time=d["last_update_time"],
        tags=d["tags"],
        deleted_time=d.get("deleted_time"),
    )


def run_to_json(r: Run) -> dict[str, Any]:
    i = r.info
    return {
        "info": {
            "run_id": i.run_id,
            "experiment_id": i.experiment_id,
            "run_name": i.run_name,
            "user_id": i.user_id,
            "status": i.status.value,
            "start_time": i.start_time,
            "end_time": i.end_time,
            "lifecycle_stage": i.lifecycle_stage.value,
            "parent_run_id": i.parent_run_id,
            "deleted_time": i.deleted_time,
        },
        "params": dict(r.params),
        "metrics": [metric_to_json(m) for m in r.latest_metrics.values()],
        "tags": dict(r.tags),
    }


def run_from_json(d: dict[str, Any]) -> Run:
    i = d["info"]
    info = RunInfo(
        run_id=i["run_id"],
        experiment_id=i["experiment_id"],
        run_name=i["run_name"],
        user_id=i["user_id"],
        status=RunStatus(i["status"]),
        start_time=i["start_time"],
        end_time=i["end_time"],
        lifecycle_stage=LifecycleStage(i["lifecycle_stage"]),
        parent_run_id=i.get("parent_run_id"),
        deleted_time=i.get("deleted_time"),
    )
    metrics = {m["key"]: metric_from_json(m) for m in d["metrics"]}
    return Run(info, d["params"], metrics, d["tags"])


def artifact_to_json(a: ArtifactEntry) -> dict[str, Any]:
    return {"path": a.path, "digest": a.digest, "size": a.size}


def artifact_from_json(d: dict[str, Any]) -> ArtifactEntry:
    return ArtifactEntry(d["path"], d["digest"], int(d["size"]))
