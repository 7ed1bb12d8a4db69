"""The JSON answers of the REST API, as pydantic models: documentation only.

The server builds its answers as plain dicts (``wire.schemas``' ``*_to_json`` functions, encoded
by orjson) and never instantiates these models; they give ``/openapi.json`` the exact shape of
each answer. ``tests/server/test_openapi_contract.py`` validates real answers against them, so
a field added to an answer without being added here fails the suite (every model forbids fields
it does not name).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.domain.entities import LifecycleStage, RunStatus
from modelyard.errors import ErrorCode


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MetricValue = Annotated[
    float | Literal["NaN", "Infinity", "-Infinity"],
    Field(description='A JSON number, or "NaN", "Infinity", "-Infinity" (which JSON cannot '
                      "express as numbers)."),
]


class FailedCondition(_Out):
    message: str = Field(description="One condition that failed.")
    field: str | None = Field(description="The field it concerns, if any.")


class ErrorDetail(_Out):
    code: ErrorCode = Field(description="Stable machine-readable code.")
    parent: ErrorCode | None = Field(
        description="The code of the nearest more general error (INVALID_ARGUMENT for "
                    "TOO_LARGE, ...): a client that does not know `code` can act on this one.")
    message: str = Field(description="A sentence for a human, naming what was wrong.")
    field: str | None = Field(description="The offending field, parameter or header, if any.")
    details: list[FailedCondition] = Field(
        description="Each condition that failed, when an error has several; often empty.")


class ErrorOut(_Out):
    """Every error has this body; the status follows from the code (server/errors.py)."""

    error: ErrorDetail


class HealthOut(_Out):
    status: Literal["ok"]
    version: str


class EmptyOut(_Out):
    """``{}``: done, nothing to report."""


class ExperimentOut(_Out):
    experiment_id: str
    name: str
    description: str
    lifecycle_stage: LifecycleStage
    creation_time: int = Field(description="Milliseconds since the Unix epoch.")
    last_update_time: int
    deleted_time: int | None
    tags: dict[str, str]


class ExperimentPageOut(_Out):
    experiments: list[ExperimentOut]
    next_page_token: str | None = Field(description="Pass as page_token for the next page; "
                                                    "null on the last one.")


class RunInfoOut(_Out):
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: RunStatus
    start_time: int = Field(description="Milliseconds since the Unix epoch.")
    end_time: int | None
    lifecycle_stage: LifecycleStage
    parent_run_id: str | None
    deleted_time: int | None


class MetricOut(_Out):
    key: str
    value: MetricValue
    step: int
    timestamp: int


class RunOut(_Out):
    info: RunInfoOut
    params: dict[str, str]
    metrics: list[MetricOut] = Field(description="The latest value of each metric key.")
    tags: dict[str, str]


class RunPageOut(_Out):
    runs: list[RunOut]
    next_page_token: str | None
    total: int | None = Field(None, description="Every run matching, on all pages; present "
                                                "only when include_total was true.")


class CountOut(_Out):
    count: int


class BatchOut(_Out):
    stored: bool = Field(description="False when this batch_id had been stored before.")
    duplicate: bool


class HistoryOut(_Out):
    """A metric history as parallel arrays (``steps[i]``, ``timestamps[i]``, ``values[i]``
    are one point)."""

    key: str
    steps: list[int]
    timestamps: list[int]
    values: list[MetricValue]


class ArtifactOut(_Out):
    path: str
    digest: str = Field(description="BLAKE3 of the content, hex.")
    size: int


class ArtifactListOut(_Out):
    files: list[ArtifactOut]


class UploadStateOut(_Out):
    upload_id: str
    run_id: str
    path: str
    size: int
    part_size: int
    part_count: int
    digest: str | None
    created_time: int
    parts: list[int] = Field(description="The part numbers received so far.")
    completed: bool
    artifact: ArtifactOut | None = Field(description="The published artifact, once completed.")


class PartOut(_Out):
    part_number: int
    size: int
    acknowledged: Literal[True]
    already_had: bool = Field(description="The server held this part already (a retry).")


class GcReportOut(_Out):
    """What a collection removed or, on a dry run, would remove."""

    dry_run: bool
    runs: list[str]
    experiments: list[str]
    rows: dict[str, int] = Field(description="Rows by table.")
    blobs: int
    bytes_freed: int
    blobs_kept: int
    uploads: int
    upload_bytes: int
    temp_files: int
    temp_bytes: int
    leases: int
    trash_settled: int
    rows_freed: int
    total_bytes_freed: int
