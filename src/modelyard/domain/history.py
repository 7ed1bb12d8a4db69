"""Metric histories for charts: the downsampling rule and the export formats.

Downsampling keeps the *shape* of a history in at most ``max_points`` points, computed by the
store over packed columns (never a Python object per point). The rule, which every store
implements exactly (a test compares each with a plain-Python version of it):

1. The history is ordered by step, then timestamp, then logging order.
2. If it holds at most ``max_points`` points, all of them are returned, unchanged.
3. Otherwise its step range ``[first step, last step]`` is cut into ``B`` buckets of equal
   width (the last may be narrower), ``B = (max_points - 2) // 2``, or ``// 3`` when the history
   holds any NaN.
4. The answer is the first point, the last point, and for every bucket that holds points: the
   point with the smallest value and the point with the largest value (the first of them in
   history order when several share the value), and the bucket's first NaN point if it has one.
   Each point appears once, in history order, so the steps never go backwards.

So a spike (or a dip) anywhere survives, whatever ``max_points``; ``+inf`` and ``-inf`` are the
largest and smallest values and therefore always kept; NaN is not ordered, so it is kept
separately: every bucket that holds a NaN shows one, which a chart draws as a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from modelyard.domain.entities import Metric
from modelyard.errors import InvalidArgument

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def bucket_count(max_points: int, *, has_nan: bool) -> int:
    """How many step buckets fit in ``max_points`` beside the first and last point."""
    return max(0, (max_points - 2) // (3 if has_nan else 2))


def step_buckets(first_step: int, last_step: int, count: int) -> list[tuple[int, int]]:
    """``count`` (or fewer) inclusive step ranges of equal width covering the history's steps.

    Computed with Python integers, so no bound overflows int64 even when the steps span it.
    """
    if count <= 0 or last_step < first_step:
        return []
    span = last_step - first_step + 1
    width = -(-span // count)  # ceil
    out = []
    low = first_step
    while low <= last_step:
        high = min(low + width - 1, last_step)
        out.append((low, high))
        low = high + 1
    return out


@dataclass(frozen=True, slots=True)
class HistoryColumns:
    """Points of one metric's history as three parallel numpy arrays (how histories are read,
    streamed and exported: millions of points without a Python object each).

    numpy is imported where columns are made, not here: ``import modelyard`` stays light.
    """

    steps: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, index: npt.NDArray[np.intp] | slice) -> HistoryColumns:
        return HistoryColumns(self.steps[index], self.timestamps[index], self.values[index])

    @classmethod
    def from_points(cls, points: Sequence[Metric]) -> HistoryColumns:
        import numpy as np

        return cls(np.fromiter((m.step for m in points), np.int64, len(points)),
                   np.fromiter((m.timestamp for m in points), np.int64, len(points)),
                   np.fromiter((m.value for m in points), np.float64, len(points)))

    def to_points(self, key: str) -> list[Metric]:
        return [Metric(key, v, s, t) for s, t, v in
                zip(self.steps.tolist(), self.timestamps.tolist(), self.values.tolist(),
                    strict=True)]


class HistoryFormat(StrEnum):
    """File formats a full history is exported in."""

    CSV = "csv"
    ARROW = "arrow"

    @property
    def media_type(self) -> str:
        if self is HistoryFormat.CSV:
            return "text/csv; charset=utf-8"
        return "application/vnd.apache.arrow.stream"


def parse_history_format(value: object) -> HistoryFormat:
    """Raises: InvalidArgument (field ``format``) for anything but "csv" or "arrow"."""
    if isinstance(value, str) and value in HistoryFormat.__members__.values():
        return HistoryFormat(value)
    names = ", ".join(f.value for f in HistoryFormat)
    raise InvalidArgument(f"format must be one of {names}, not {value!r}", field="format")
