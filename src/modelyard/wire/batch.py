"""The ingestion fast path: a log-batch JSON body straight to domain values.

This is the hottest request the server answers (thousands of points per call), so it skips
pydantic model objects: orjson parses, and each point is checked and converted in one pass. The
checks and messages mirror :class:`modelyard.wire.schemas.LogBatchIn`, which still documents the
body in the OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from modelyard.domain.entities import ArtifactEntry, LogBatch, Metric, NewRun, Param, RunEnd, Tag
from modelyard.errors import InvalidArgument
from modelyard.wire.schemas import RunCreateIn, RunEndIn, StoredArtifactIn

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_METRIC_FIELDS = frozenset({"key", "value", "step", "timestamp"})
_KV_FIELDS = frozenset({"key", "value"})
_TOP_FIELDS = frozenset({"batch_id", "create", "metrics", "params", "tags", "artifacts",
                         "end"})
NOT_JSON = "request body is not valid JSON"


def _bad(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}", field=field)


def _int(value: Any, field: str) -> int:
    if type(value) is not int:
        raise _bad(field, "must be an integer")
    return value


def _metric(d: Any, i: int) -> Metric:
    # Fast path: a well-formed point costs a few type checks and one constructor call.
    if type(d) is dict and len(d) <= 4:
        key, value, ts, step = d.get("key"), d.get("value"), d.get("timestamp"), d.get("step", 0)
        if (
            type(key) is str
            and type(value) is float
            and type(step) is int
            and type(ts) is int
            and len(d) == (4 if "step" in d else 3)
        ):
            return Metric(key, value, step, ts)
    return _metric_slow(d, i)


def _metric_slow(d: Any, i: int) -> Metric:
    if type(d) is not dict:
        raise _bad(f"metrics.{i}", "must be an object")
    if d.keys() - _METRIC_FIELDS:
        extra = sorted(d.keys() - _METRIC_FIELDS)[0]
        raise _bad(f"metrics.{i}.{extra}", "unknown field")
    key = d.get("key")
    if type(key) is not str:
        raise _bad(f"metrics.{i}.key", "must be a string")
    raw: Any = d.get("value")
    kind = type(raw)
    if kind is int or kind is float:
        value = float(raw)
    elif kind is str and raw in _NON_FINITE:
        value = _NON_FINITE[raw]
    else:
        raise _bad(f"metrics.{i}.value", 'must be a number, "NaN", "Infinity" or "-Infinity"')
    if "timestamp" not in d:
        raise _bad(f"metrics.{i}.timestamp", "is required")
    step = _int(d.get("step", 0), f"metrics.{i}.step")
    return Metric(key, value, step, _int(d["timestamp"], f"metrics.{i}.timestamp"))


def _kv(d: Any, field: str) -> tuple[str, str]:
    if type(d) is not dict:
        raise _bad(field, "must be an object")
    if d.keys() != _KV_FIELDS:
        missing = sorted(_KV_FIELDS - d.keys())
        raise _bad(f"{field}.{missing[0]}" if missing else field,
                   "is required" if missing else "unknown field")
    key, value = d["key"], d["value"]
    if type(key) is not str:
        raise _bad(f"{field}.key", "must be a string")
    if type(value) is not str:
        raise _bad(f"{field}.value", "must be a string")
    return key, value


def _list(body: dict[str, Any], name: str) -> list[Any]:
    items = body.get(name, [])
    if type(items) is not list:
        raise _bad(name, "must be an array")
    return items


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    batch: LogBatch
    batch_id: str | None = None
    create: NewRun | None = None
    end: RunEnd | None = None


def _create(d: Any) -> NewRun | None:
    if d is None:
        return None
    body = _fields(d, "create", RunCreateIn)
    return NewRun(body.experiment_id, body.run_name, body.user_id, body.start_time,
                  body.parent_run_id)


def _end(d: Any) -> RunEnd | None:
    if d is None:
        return None
    body = _fields(d, "end", RunEndIn)
    # The status name is checked by the service (validation.run_status), as everywhere.
    return RunEnd(body.status, body.end_time)  # type: ignore[arg-type]


def _stored(d: Any, i: int) -> ArtifactEntry:
    body = _fields(d, f"artifacts.{i}", StoredArtifactIn)
    return ArtifactEntry(body.path, body.digest, body.size)


M = TypeVar("M", bound=BaseModel)


def _fields(d: Any, name: str, model: type[M]) -> M:
    """A small nested object, checked by its schema; errors name ``name.field``."""
    try:
        return model.model_validate(d)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (name, *first["loc"]))
        raise _bad(where, first["msg"]) from None


def parse_log_batch(raw: bytes) -> ParsedBatch:
    """Parse a log-batch body.

    Returns:
        the batch (not yet validated against the limits), its batch id, and the run's
        creation and end when the body carries them.
    Raises:
        InvalidArgument: malformed JSON or a field of the wrong shape, naming the field.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidArgument(NOT_JSON, field="body") from None
    if type(body) is not dict:
        raise _bad("body", "must be a JSON object")
    if body.keys() - _TOP_FIELDS:
        raise _bad(sorted(body.keys() - _TOP_FIELDS)[0], "unknown field")
    batch_id = body.get("batch_id")
    if batch_id is not None and type(batch_id) is not str:
        raise _bad("batch_id", "must be a string")
    metrics = tuple(_metric(d, i) for i, d in enumerate(_list(body, "metrics")))
    params = tuple(Param(*_kv(d, f"params.{i}")) for i, d in enumerate(_list(body, "params")))
    tags = tuple(Tag(*_kv(d, f"tags.{i}")) for i, d in enumerate(_list(body, "tags")))
    artifacts = tuple(_stored(d, i) for i, d in enumerate(_list(body, "artifacts")))
    return ParsedBatch(LogBatch(metrics, params, tags, artifacts), batch_id,
                       _create(body.get("create")), _end(body.get("end")))
