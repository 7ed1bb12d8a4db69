"""The numpy downsampler against the plain-Python statement of the rule: a history cut into
parts at random places (as its chunks and rows are), the parts fed in any order."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.domain.entities import Metric
from modelyard.domain.history import HistoryColumns, bucket_count
from modelyard.stores.sql.chunks import in_history_order
from modelyard.stores.sql.downsample import Downsampler
from support.downsampling import reference_downsample

point = st.tuples(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True),
              st.sampled_from([0.0, 1.0, 1.0, -1.0, math.nan, math.inf, -math.inf])),
    st.one_of(st.integers(0, 25), st.integers(-(2**63), 2**63 - 1)),
    st.integers(0, 2),
)


def key(m: Metric) -> tuple[int, int, float | str]:
    return (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(point, min_size=3, max_size=200), max_points=st.integers(2, 50),
       cuts=st.lists(st.integers(0, 200), max_size=8), order=st.randoms(use_true_random=False))
def test_parts_in_any_order_give_the_rule(data: list[tuple[float, int, int]], max_points: int,
                                          cuts: list[int], order: object) -> None:
    # Fewer points than the history holds: a shorter history is returned whole by the store.
    max_points = 2 + (max_points - 2) % (len(data) - 2)
    logged = [Metric("m", v, s, t) for v, s, t in data]
    history = sorted(logged, key=lambda m: (m.step, m.timestamp))  # stable: logging order
    bounds = sorted({0, len(logged), *(c for c in cuts if c < len(logged))})
    parts = [(start, in_history_order(HistoryColumns.from_points(logged[start:end])))
             for start, end in itertools.pairwise(bounds)]
    order.shuffle(parts)  # type: ignore[attr-defined]
    has_nan = any(math.isnan(m.value) for m in logged)
    sampler = Downsampler(min(m.step for m in logged), max(m.step for m in logged),
                          bucket_count(max_points, has_nan=has_nan))
    for start, cols in parts:
        sampler.feed(cols, start)
    got = sampler.result().to_points("m")
    assert [key(m) for m in got] == [key(m) for m in reference_downsample(history, max_points)]
