"""Immutable tracking entities: what an experiment, a run and its data *are*.

Semantics follow MLflow's so that an MLflow-compatible API maps straight onto them: times are
milliseconds since the epoch, params are immutable strings, metrics keep their full history and
the run shows the latest value per key (highest step, then timestamp, then value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class LifecycleStage(StrEnum):
    ACTIVE = "active"
    DELETED = "deleted"


class ViewType(StrEnum):
    """Which lifecycle stages a listing or search returns."""

    ACTIVE_ONLY = "active_only"
    DELETED_ONLY = "deleted_only"
    ALL = "all"

    def stages(self) -> tuple[LifecycleStage, ...]:
        if self is ViewType.ACTIVE_ONLY:
            return (LifecycleStage.ACTIVE,)
        if self is ViewType.DELETED_ONLY:
            return (LifecycleStage.DELETED,)
        return (LifecycleStage.ACTIVE, LifecycleStage.DELETED)


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: str
    name: str
    description: str
    lifecycle_stage: LifecycleStage
    creation_time: int
    last_update_time: int
    tags: Mapping[str, str] = field(default_factory=dict)
    deleted_time: int | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    """One point of a metric's history. ``value`` may be NaN or ±inf."""

    key: str
    value: float
    step: int
    timestamp: int

    def sort_key(self) -> tuple[int, int, bool, float]:
        """Order that decides the run's latest value (NaN ranks below every number, -inf
        included, as in the SQL upsert)."""
        nan = math.isnan(self.value)
        return (self.step, self.timestamp, not nan, -math.inf if nan else self.value)


@dataclass(frozen=True, slots=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Tag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: RunStatus
    start_time: int
    end_time: int | None
    lifecycle_stage: LifecycleStage
    parent_run_id: str | None = None
    deleted_time: int | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """A run as it is read back: its info, params, latest metric points and tags."""

    info: RunInfo
    params: Mapping[str, str] = field(default_factory=dict)
    latest_metrics: Mapping[str, Metric] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.run_id

    @property
    def metrics(self) -> dict[str, float]:
        """Latest value of every metric, by key."""
        return {k: m.value for k, m in self.latest_metrics.items()}

    @property
    def name(self) -> str:
        return self.info.run_name

    @property
    def experiment_id(self) -> str:
        return self.info.experiment_id

    @property
    def status(self) -> RunStatus:
        return self.info.status

    @property
    def start_time(self) -> int:
        return self.info.start_time

    @property
    def end_time(self) -> int | None:
        return self.info.end_time

    @property
    def user_id(self) -> str:
        return self.info.user_id

    @property
    def parent_run_id(self) -> str | None:
        return self.info.parent_run_id


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """One file of a run's artifact manifest: a relative path naming a blob."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Metrics, params and tags written to one run in one transaction; and ``artifacts``:
    blobs the backend already holds, named in the run's manifest in the same transaction (an
    upload skipped because its content is stored)."""

    metrics: tuple[Metric, ...] = ()
    params: tuple[Param, ...] = ()
    tags: tuple[Tag, ...] = ()
    artifacts: tuple[ArtifactEntry, ...] = ()

    def __len__(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags) + len(self.artifacts)


@dataclass(frozen=True, slots=True)
class NewRun:
    """What creating a run states. The run id is the client's; a create repeated with the same
    id and the same values (a retry) is answered as the first one was."""

    experiment_id: str
    run_name: str
    user_id: str
    start_time: int
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The end of a run, carried by its last batch: a terminal status and the end time."""

    status: RunStatus
    end_time: int
