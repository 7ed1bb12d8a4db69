"""The downsampling rule of ``modelyard.domain.history``, computed over a history's parts.

Pieces of a history are fed one at a time, in any order, each sorted in history order; each
point comes with an *order*, a number such that (step, timestamp, order) is the history order
of every point fed: its place in the whole history (how ``stores.sql.history`` feeds it), or its
place when the parts are laid out in logging order one after the other. For every bucket the
best candidate so far is kept (the smallest value, the largest, the first NaN; on a tie the first
in history order), so memory stays at a few arrays of the bucket count however long the
history, and each piece is read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelyard.domain.history import HistoryColumns, step_buckets
from modelyard.stores.sql.chunks import EMPTY, Floats, Ints

Mask = npt.NDArray[np.bool_]


@dataclass(slots=True)
class _Best:
    """Per bucket: whether a candidate was seen, and that candidate's value, step, timestamp
    and order."""

    seen: Mask
    value: Floats
    step: Ints
    ts: Ints
    order: Ints

    @classmethod
    def empty(cls, n: int) -> _Best:
        return cls(np.zeros(n, bool), np.zeros(n, np.float64), np.zeros(n, np.int64),
                   np.zeros(n, np.int64), np.zeros(n, np.int64))

    def offer(self, buckets: Ints, value: Floats, step: Ints, ts: Ints, order: Ints,
              better_value: Mask | None) -> None:
        """Take each candidate whose bucket has none yet, whose value is better
        (``better_value``, None: values do not compete) or equal and that comes first in
        history order."""
        cur_s, cur_t, cur_o = self.step[buckets], self.ts[buckets], self.order[buckets]
        earlier_ts = (ts < cur_t) | ((ts == cur_t) & (order < cur_o))
        first = (step < cur_s) | ((step == cur_s) & earlier_ts)
        if better_value is None:
            take = ~self.seen[buckets] | first
        else:
            tie = value == self.value[buckets]
            take = ~self.seen[buckets] | better_value | (tie & first)
        chosen = buckets[take]
        self.seen[chosen] = True
        self.value[chosen] = value[take]
        self.step[chosen] = step[take]
        self.ts[chosen] = ts[take]
        self.order[chosen] = order[take]

    def points(self) -> tuple[Floats, Ints, Ints, Ints]:
        m = self.seen
        return self.value[m], self.step[m], self.ts[m], self.order[m]


class Downsampler:
    """Feed the parts of a history whose first and last step are known; then :meth:`result`.

    Args:
        first_step, last_step: the smallest and largest step of the whole history.
        buckets: how many step buckets (``domain.history.bucket_count``).
    """

    def __init__(self, first_step: int, last_step: int, buckets: int) -> None:
        self._lows = np.array([lo for lo, _ in step_buckets(first_step, last_step, buckets)],
                              np.int64)
        size = len(self._lows)
        self._min, self._max, self._nan = _Best.empty(size), _Best.empty(size), _Best.empty(size)
        # The first and the last point of the history: (step, timestamp, order, value).
        self._first: tuple[int, int, int, float] | None = None
        self._last: tuple[int, int, int, float] | None = None

    def feed(self, cols: HistoryColumns, order0: int) -> None:
        """One piece in history order whose first point has order ``order0``."""
        n = len(cols)
        if n == 0:
            return
        s, t, v = cols.steps, cols.timestamps, cols.values
        self._feed_ends(s, t, v, order0, n)
        if len(self._lows) == 0:
            return
        # The piece is sorted, so each bucket is a slice of it: [cut[j], cut[j + 1]).
        lows = self._lows
        j0 = int(np.searchsorted(lows, s[0], side="right")) - 1
        j1 = int(np.searchsorted(lows, s[-1], side="right"))
        bounds = np.append(np.searchsorted(s, lows[j0:j1], side="left"), n)
        full = np.flatnonzero(bounds[1:] > bounds[:-1])
        starts, ends = bounds[full], bounds[full + 1]
        seg_bucket = full + j0
        lengths = ends - starts
        nan = np.isnan(v)
        for best, reduce, better in ((self._min, np.fmin, np.less),
                                     (self._max, np.fmax, np.greater)):
            extreme = reduce.reduceat(v, starts)  # NaN only where a segment is all NaN
            at = _first_in_segments(np.flatnonzero(v == np.repeat(extreme, lengths)), starts,
                                    ends)
            ok = at >= 0
            idx = at[ok]
            b = seg_bucket[ok]
            best.offer(b, v[idx], s[idx], t[idx], order0 + idx,
                       better(v[idx], best.value[b]))
        at = _first_in_segments(np.flatnonzero(nan), starts, ends)
        ok = at >= 0
        idx = at[ok]
        self._nan.offer(seg_bucket[ok], v[idx], s[idx], t[idx], order0 + idx, None)

    def _feed_ends(self, s: Ints, t: Ints, v: Floats, order0: int, n: int) -> None:
        head = (int(s[0]), int(t[0]), order0, float(v[0]))
        tail = (int(s[-1]), int(t[-1]), order0 + n - 1, float(v[-1]))
        if self._first is None or head[:3] < self._first[:3]:
            self._first = head
        if self._last is None or tail[:3] > self._last[:3]:
            self._last = tail

    def result(self) -> HistoryColumns:
        """The chosen points, each once, in history order."""
        ends = [p for p in (self._first, self._last) if p is not None]
        picked = [best.points() for best in (self._min, self._max, self._nan)]
        picked.append((np.array([p[3] for p in ends], np.float64),
                       np.array([p[0] for p in ends], np.int64),
                       np.array([p[1] for p in ends], np.int64),
                       np.array([p[2] for p in ends], np.int64)))
        value = np.concatenate([p[0] for p in picked])
        if len(value) == 0:
            return EMPTY
        step = np.concatenate([p[1] for p in picked])
        ts = np.concatenate([p[2] for p in picked])
        order = np.concatenate([p[3] for p in picked])
        _, once = np.unique(order, return_index=True)
        value, step, ts, order = value[once], step[once], ts[once], order[once]
        sort = np.lexsort((order, ts, step))
        return HistoryColumns(step[sort], ts[sort], value[sort])


def _first_in_segments(positions: npt.NDArray[np.intp], starts: npt.NDArray[np.intp],
                       ends: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """For each segment [start, end), the first of the sorted ``positions`` inside it, or -1."""
    if len(positions) == 0:
        return np.full(len(starts), -1, np.intp)
    k = np.minimum(np.searchsorted(positions, starts), len(positions) - 1)
    found = positions[k]
    return np.where((found >= starts) & (found < ends), found, -1)
