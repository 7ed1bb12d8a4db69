"""A plain-Python statement of the downsampling rule in ``modelyard.domain.history``, written
independently of the SQL (and of the domain helpers), to compare the stores against."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelyard.domain.entities import Metric


def reference_downsample(points: Sequence[Metric], max_points: int) -> list[Metric]:
    """``points`` must be in history order (step, timestamp, logging order)."""
    n = len(points)
    if n <= max_points:
        return list(points)
    has_nan = any(math.isnan(p.value) for p in points)
    per_bucket = 3 if has_nan else 2
    buckets = max(0, (max_points - 2) // per_bucket)
    keep = {0, n - 1}
    if buckets:
        first, last = points[0].step, points[-1].step
        width = -(-(last - first + 1) // buckets)
        members: dict[int, list[int]] = {}
        for i, p in enumerate(points):
            members.setdefault((p.step - first) // width, []).append(i)
        for idx in members.values():
            numbers = [i for i in idx if not math.isnan(points[i].value)]
            if numbers:
                lo = hi = numbers[0]
                for i in numbers[1:]:
                    if points[i].value < points[lo].value:
                        lo = i
                    if points[i].value > points[hi].value:
                        hi = i
                keep |= {lo, hi}
            nans = [i for i in idx if math.isnan(points[i].value)]
            if nans:
                keep.add(nans[0])
    return [points[i] for i in sorted(keep)]
