"""What a refusal concerns: the part of a batch to give up, and the parts to send again.

A batch is never all-or-nothing across unrelated values on the client side. When the backend
refuses a batch for something one value did (a param another process set to another value),
only that value is given up and the rest is sent again; when it refuses the run itself (gone,
deleted, its creation refused), everything meant for the run is given up. Everything given up
is listed by the :class:`~modelyard.errors.LoggingRefused` that the next flush or the run end
raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from modelyard.domain.entities import ArtifactEntry, LogBatch, Metric, NewRun, Param, RunEnd, Tag
from modelyard.errors import InvalidArgument, LoggingRefused, ModelyardError, ParamOverwrite
from modelyard.errors import RefusedValue as Refused

# Fields an InvalidArgument names when the request, not one logged value, was refused.
_RUN_FIELDS = frozenset({
    "run_id", "batch_id", "experiment_id", "run_name", "user_id", "start_time",
    "parent_run_id", "status", "end_time",
})
# The tag the sender keeps the refusal count in: never counted as refused itself.
COUNT_TAG = "modelyard.logging_errors"
SHOWN = 10  # refused keys named in the message (all are in LoggingRefused.refused)
# The batch fields whose values a refusal can name (``params.KEY``, ``artifacts.PATH``).
_NAMED: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("params", lambda p: p.key), ("artifacts", lambda a: a.path))


@dataclass(frozen=True, slots=True)
class Part:
    """One request's worth: a batch, and the run's creation or end when it travels with it."""

    batch: LogBatch
    create: NewRun | None = None
    end: RunEnd | None = None

    @property
    def size(self) -> int:
        return len(self.batch)


def _about_the_run(exc: ModelyardError) -> bool:
    where = exc.field or ""
    if isinstance(exc, ParamOverwrite) or where.startswith("artifacts."):
        return False  # one param, one named blob
    if isinstance(exc, InvalidArgument):
        return where in _RUN_FIELDS or where.startswith(("create", "end"))
    return True  # not found, deleted, an id taken by another run, anything unexpected


def _batch(items: list[Any]) -> LogBatch:
    return LogBatch(
        tuple(i for i in items if isinstance(i, Metric)),
        tuple(i for i in items if isinstance(i, Param)),
        tuple(i for i in items if isinstance(i, Tag)),
        tuple(i for i in items if isinstance(i, ArtifactEntry)),
    )


def _nonempty(parts: list[Part]) -> list[Part]:
    return [p for p in parts if p.size or p.create is not None or p.end is not None]


def split_refused(part: Part, exc: ModelyardError) -> tuple[Part | None, list[Part]]:
    """What of ``part`` the error ``exc`` refused, and the parts to send again, in order.

    A param overwrite names its key, a missing stored blob its path (``artifacts.PATH``): that
    value is refused, the rest goes again at once. An error about the run refuses the whole
    part. Any other refusal of several values is halved until the values it concerns stand
    alone (the run's creation goes with the first half, its end with the last), so each valid
    value is stored.
    """
    if _about_the_run(exc):
        return part, []
    batch = part.batch
    where = exc.field or ""
    for kind, name_of in _NAMED:  # the error names one param or one stored blob
        if where.startswith(f"{kind}."):
            name = where.removeprefix(f"{kind}.")
            values: tuple[Any, ...] = getattr(batch, kind)
            refused = tuple(x for x in values if name_of(x) == name)
            if refused:
                kept = replace(batch, **{kind: tuple(x for x in values if name_of(x) != name)})
                return (Part(LogBatch(**{kind: refused})),
                        _nonempty([replace(part, batch=kept)]))
    items: list[Any] = [*batch.metrics, *batch.params, *batch.tags, *batch.artifacts]
    if len(items) > 1:
        half = len(items) // 2
        return None, [Part(_batch(items[:half]), part.create, None),
                      Part(_batch(items[half:]), None, part.end)]
    if items and (part.create is not None or part.end is not None):
        # One value and the run's creation or end: which was it? Send them one by one.
        return None, _nonempty([Part(LogBatch(), part.create), Part(batch),
                                Part(LogBatch(), None, part.end)])
    return part, []


def _keys(part: Part) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if part.create is not None:
        keys.append(("run", "creation"))
    keys += [("metric", m.key) for m in part.batch.metrics]
    keys += [("param", p.key) for p in part.batch.params]
    keys += [("tag", t.key) for t in part.batch.tags if t.key != COUNT_TAG]
    keys += [("artifact", a.path) for a in part.batch.artifacts]
    if part.end is not None:
        keys.append(("run", "end"))
    return keys


class RefusalLog:
    """The refused values of one run: counted in all, listed until raised."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._unraised: dict[tuple[str, str, str], Refused] = {}
        self.total = 0

    def add(self, part: Part, exc: ModelyardError) -> None:
        for kind, key in _keys(part):
            entry = self._unraised.get((kind, key, exc.message))
            if entry is None:
                self._unraised[(kind, key, exc.message)] = Refused(kind, key, exc)
            else:
                entry.count += 1
            self.total += 1

    def take_error(self) -> LoggingRefused | None:
        """The error listing what was refused since the last call; None when nothing was."""
        if not self._unraised:
            return None
        refused = tuple(self._unraised.values())
        self._unraised = {}
        count = sum(r.count for r in refused)
        shown = "; ".join(r.describe() for r in refused[:SHOWN])
        more = f"; and {len(refused) - SHOWN} more keys" if len(refused) > SHOWN else ""
        return LoggingRefused(
            f"run {self._run_id}: {count} logged value{'s' if count != 1 else ''} refused and "
            f"not stored (everything else was stored): {shown}{more}",
            refused=refused,
        )
