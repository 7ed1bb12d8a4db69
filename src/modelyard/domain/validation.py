"""Validation limits, enforced identically in embedded and server mode.

The numbers are documented in ``docs/limits.md``; a test checks the two agree.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Iterable
from typing import TypeGuard

from modelyard.domain.entities import LogBatch, Metric, NewRun, Param, RunEnd, RunStatus, Tag
from modelyard.errors import InvalidArgument

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_RUN_NAME_LENGTH = 250
MAX_USER_ID_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 20000
MAX_BATCH_METRICS = 10000
MAX_BATCH_PARAMS = 1000
MAX_BATCH_TAGS = 1000
MAX_BATCH_ARTIFACTS = 100
MAX_RESULTS = 50000
MAX_FILTER_LENGTH = 10000
# PostgreSQL plans AND-ed comparisons as one join each, at a cost that grows steeply: 200 took
# 15 s of planning on an empty database, 64 take 0.4 s (a request must not hold the server).
MAX_FILTER_COMPARISONS = 64
MAX_ORDER_BY = 16  # order_by entries of one search
MAX_SEARCH_EXPERIMENTS = 1000  # experiment_ids of one search or count
MAX_CREATE_TAGS = 1000  # tags given when creating an experiment or a run
# A downsampled metric history: at least the first and last point, at most this many.
MIN_HISTORY_POINTS = 2
MAX_HISTORY_POINTS = 100000
SYSTEM_TAG_PREFIX = "modelyard."
# int64 bounds: what both SQLite INTEGER and PostgreSQL BIGINT hold.
MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)

# Letters, digits, underscore, dash, period, space, slash: MLflow's key alphabet.
# \Z, not $: "$" also matches before a trailing newline, which let "key\n" and "1\n" through.
_KEY_RE = re.compile(r"^[\w\-. /]+\Z", re.ASCII)
_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
_EXPERIMENT_ID_RE = re.compile(r"^[0-9]{1,18}\Z")


def validate_key(key: object, *, field: str) -> str:
    """Check a metric, param or tag key; returns it unchanged."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"{field} must be a non-empty string", field=field)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"{field} {key[:40]!r}... is {len(key)} characters; the limit is {MAX_KEY_LENGTH}",
            field=field,
        )
    if not _KEY_RE.match(key):
        raise InvalidArgument(
            f"{field} {key!r} may contain only letters, digits, '_', '-', '.', ' ' and '/'",
            field=field,
        )
    if key.startswith("/") or key.endswith("/") or "//" in key or ".." in key.split("/"):
        raise InvalidArgument(f"{field} {key!r} is not a valid key path", field=field)
    return key


def _validate_text(value: object, *, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string, got {type(value).__name__}", field=field)
    if len(value) > limit:
        raise InvalidArgument(
            f"{field} is {len(value)} characters; the limit is {limit}", field=field
        )
    if "\x00" in value:
        raise InvalidArgument(f"{field} must not contain NUL characters", field=field)
    return value


def canonical_name(name: object, *, field: str, limit: int) -> str:
    """A display name (experiment, run, user id): NFC-normalised, stripped, non-empty, within
    limit, and free of characters that are invisible or reorder text (``lookalikes``), so that
    what a name shows is all it holds. Nothing else is changed (no NFKC: ``x²`` stays)."""
    from modelyard.domain.lookalikes import describe_invisible, invisible_character

    # The limit applies to the name as stored: NFC shortens some names (decomposed accents
    # compose) and lengthens others (U+0958 becomes two code points), so the raw text only gets
    # a generous bound here and the stored form is measured after normalising.
    text = _validate_text(name, field=field, limit=4 * limit)
    text = unicodedata.normalize("NFC", text).strip()
    if len(text) > limit:
        raise InvalidArgument(
            f"{field} is {len(text)} characters; the limit is {limit}", field=field
        )
    if not text:
        raise InvalidArgument(f"{field} must not be empty", field=field)
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidArgument(f"{field} must not contain control characters", field=field)
    hidden = invisible_character(text)
    if hidden is not None:
        raise InvalidArgument(f"{field} contains {describe_invisible(hidden)}", field=field)
    return text


def validate_experiment_name(name: object) -> str:
    return canonical_name(name, field="name", limit=MAX_EXPERIMENT_NAME_LENGTH)


def validate_run_name(name: object) -> str:
    return canonical_name(name, field="run_name", limit=MAX_RUN_NAME_LENGTH)


def validate_user_id(user_id: object) -> str:
    return canonical_name(user_id, field="user_id", limit=MAX_USER_ID_LENGTH)


def validate_new_run(new: NewRun) -> NewRun:
    """What creating a run states, checked (names canonicalised)."""
    parent = new.parent_run_id
    return NewRun(
        experiment_id=str(int(validate_experiment_id(new.experiment_id))),  # "007" is 7
        run_name=validate_run_name(new.run_name),
        user_id=validate_user_id(new.user_id),
        start_time=validate_int64(new.start_time, field="start_time"),
        parent_run_id=None if parent is None else validate_run_id(parent, field="parent_run_id"),
    )


_STATUS_NAMES = frozenset(s.value for s in RunStatus)


def run_status(status: object, *, terminal: bool = False) -> RunStatus:
    """A run status by name; ``terminal`` accepts only FINISHED, FAILED and KILLED."""
    allowed = [s for s in RunStatus if s.is_terminal or not terminal]
    found = RunStatus(status) if isinstance(status, str) and status in _STATUS_NAMES else None
    if found is None or found not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise InvalidArgument(f"status must be one of {names}", field="status")
    return found


def validate_run_end(end: RunEnd) -> RunEnd:
    return RunEnd(run_status(end.status, terminal=True),
                  validate_int64(end.end_time, field="end_time"))


def validate_description(text: object) -> str:
    return _validate_text(text, field="description", limit=MAX_DESCRIPTION_LENGTH)


def validate_run_id(run_id: object, *, field: str = "run_id") -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidArgument(f"{field} must be 32 lowercase hex characters", field=field)
    return run_id


def is_experiment_id(value: object) -> TypeGuard[str]:
    """1-18 ASCII digits: what an experiment id (a BIGINT) looks like on the API."""
    return isinstance(value, str) and _EXPERIMENT_ID_RE.match(value) is not None


def validate_experiment_id(experiment_id: object, *, field: str = "experiment_id") -> str:
    if not is_experiment_id(experiment_id):
        raise InvalidArgument(f"{field} must be a string of digits", field=field)
    return experiment_id


def validate_int64(value: object, *, field: str) -> int:
    """An integer that fits in 64 bits: a Python int, or anything with ``__index__`` (numpy
    integer scalars) that is not a bool."""
    if type(value) is not int:
        if isinstance(value, bool) or _is_bool_scalar(value):
            raise InvalidArgument(f"{field} must be an integer, got a bool", field=field)
        try:
            value = operator.index(value)  # type: ignore[arg-type]
        except Exception:  # TypeError, or whatever an odd __index__ raises
            raise InvalidArgument(
                f"{field} must be an integer, got {type(value).__name__}", field=field
            ) from None
    if not MIN_INT64 <= value <= MAX_INT64:
        raise InvalidArgument(f"{field} {value} does not fit in 64 bits", field=field)
    return value


# numpy dtype kinds that are not real numbers: bool, complex, object, strings, bytes, dates,
# time deltas, void. Checked on the value's ``dtype`` without importing numpy.
_NOT_REAL_KINDS = frozenset("bcOUSMmV")


def _is_bool_scalar(value: object) -> bool:
    dtype = getattr(value, "dtype", None)
    return getattr(dtype, "kind", None) == "b"


def metric_value(value: object, *, key: str) -> float:
    """The float a metric value is stored as, or InvalidArgument naming the key and the type.

    Accepted: int and float (NaN and infinities included), numpy floating and integer scalars
    of every width, 0-d numeric arrays, and any other object implementing ``__float__`` that
    is not a bool or a string (``Decimal``, ``Fraction``, ...). The stored value is exactly
    ``float(value)``; an int too large for a float (``10**400``, which ``float()`` refuses)
    is refused rather than stored as infinity.
    """
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    field = "metrics.value"
    what = kind.__name__
    if isinstance(value, bool | str | bytes | bytearray) or _is_bool_scalar(value):
        raise InvalidArgument(
            f"metric {key!r} value must be a number, got {what}", field=field
        )
    try:
        ndim = getattr(value, "ndim", 0)
    except Exception:  # an odd object whose attributes raise: not a number we can read
        ndim = None
    if ndim != 0:
        shape = getattr(value, "shape", "?")
        raise InvalidArgument(
            f"metric {key!r} value must be a single number, got {what} of shape {shape}",
            field=field,
        )
    dtype_kind = getattr(getattr(value, "dtype", None), "kind", None)
    if dtype_kind in _NOT_REAL_KINDS or getattr(kind, "__float__", None) is None:
        raise InvalidArgument(
            f"metric {key!r} value must be a number, got {what}", field=field
        )
    try:
        result = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float range (10**400): not "inf" but an error
        raise InvalidArgument(f"metric {key!r} value ({what}) is too large for a float",
                              field=field) from None
    except Exception as exc:  # TypeError, ValueError, or whatever an odd __float__ raises
        raise InvalidArgument(
            f"metric {key!r} value of type {what} cannot be read as a number: {exc}",
            field=field,
        ) from None
    if type(result) is not float:  # a float subclass (numpy.float64): store the plain float
        result = float.__float__(result)
    return result


def validate_metric(metric: Metric) -> Metric:
    """Check one point; returns it with the value as a plain float and step and timestamp as
    plain ints (what is stored)."""
    validate_key(metric.key, field="metric key")
    value = metric_value(metric.value, key=metric.key)
    step = validate_int64(metric.step, field=f"metric {metric.key!r} step")
    ts = validate_int64(metric.timestamp, field=f"metric {metric.key!r} timestamp")
    if value is metric.value and step is metric.step and ts is metric.timestamp:
        return metric
    return Metric(metric.key, value, step, ts)


def _validate_metrics(points: tuple[Metric, ...]) -> tuple[Metric, ...]:
    """validate_metric over a batch, checking each distinct key once (batches repeat keys)."""
    seen: set[str] = set()
    out: list[Metric] = []
    for m in points:
        if m.key not in seen:
            validate_key(m.key, field="metric key")
            seen.add(m.key)
        value, step, ts = m.value, m.step, m.timestamp
        if (
            type(value) is float
            and type(step) is int
            and type(ts) is int
            and MIN_INT64 <= step <= MAX_INT64
            and MIN_INT64 <= ts <= MAX_INT64
        ):
            out.append(m)  # the common case, checked inline
        else:
            out.append(validate_metric(m))
    return tuple(out)


def as_text(value: object) -> str:
    """What a param or tag value is stored as: the string itself, else ``str(value)``."""
    return value if isinstance(value, str) else str(value)


def validate_param(param: Param) -> Param:
    validate_key(param.key, field="param key")
    _validate_text(param.value, field=f"param {param.key!r} value", limit=MAX_PARAM_VALUE_LENGTH)
    return param


def validate_tag(tag: Tag, *, allow_system: bool = True) -> Tag:
    validate_key(tag.key, field="tag key")
    _validate_text(tag.value, field=f"tag {tag.key!r} value", limit=MAX_TAG_VALUE_LENGTH)
    if not allow_system and tag.key.startswith(SYSTEM_TAG_PREFIX):
        raise InvalidArgument(
            f"tag key {tag.key!r} uses the reserved prefix {SYSTEM_TAG_PREFIX!r}", field="tag key"
        )
    return tag


def _no_duplicate_params(params: Iterable[Param]) -> None:
    seen: dict[str, str] = {}
    for p in params:
        if p.key in seen and seen[p.key] != p.value:
            raise InvalidArgument(
                f"param {p.key!r} appears twice in one batch with different values",
                field="params",
            )
        seen[p.key] = p.value


def validate_batch(batch: LogBatch) -> LogBatch:
    """Check a whole batch before anything is written; returns it with metric values as floats."""
    if len(batch.metrics) > MAX_BATCH_METRICS:
        raise InvalidArgument(
            f"a batch holds at most {MAX_BATCH_METRICS} metrics, got {len(batch.metrics)}",
            field="metrics",
        )
    if len(batch.params) > MAX_BATCH_PARAMS:
        raise InvalidArgument(
            f"a batch holds at most {MAX_BATCH_PARAMS} params, got {len(batch.params)}",
            field="params",
        )
    if len(batch.tags) > MAX_BATCH_TAGS:
        raise InvalidArgument(
            f"a batch holds at most {MAX_BATCH_TAGS} tags, got {len(batch.tags)}", field="tags"
        )
    if len(batch.artifacts) > MAX_BATCH_ARTIFACTS:
        raise InvalidArgument(
            f"a batch names at most {MAX_BATCH_ARTIFACTS} artifacts, got "
            f"{len(batch.artifacts)}", field="artifacts"
        )
    metrics = _validate_metrics(batch.metrics)
    params = tuple(validate_param(p) for p in batch.params)
    tags = tuple(validate_tag(t) for t in batch.tags)
    _no_duplicate_params(params)
    # Artifact paths and digests are checked by the service (artifacts.paths, .hashing).
    return LogBatch(metrics=metrics, params=params, tags=tags, artifacts=batch.artifacts)


def validate_max_results(value: object, *, limit: int = MAX_RESULTS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument("max_results must be a positive integer", field="max_results")
    if value > limit:
        raise InvalidArgument(
            f"max_results is {value}; the limit is {limit}", field="max_results"
        )
    return value


def validate_max_points(value: object) -> int:
    """``max_points`` of a downsampled metric history."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("max_points must be an integer", field="max_points")
    if not MIN_HISTORY_POINTS <= value <= MAX_HISTORY_POINTS:
        raise InvalidArgument(
            f"max_points is {value}; it must be between {MIN_HISTORY_POINTS} and "
            f"{MAX_HISTORY_POINTS}",
            field="max_points",
        )
    return value
