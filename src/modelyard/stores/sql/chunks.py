"""Metric history columns in numpy: packing chunks, putting pieces in history order.

A history is read as *parts*: its chunks in logging order, then its rows (see
``schema.MetricRow``). Each part is sorted in history order on its own (step, then timestamp,
then logging order); the history is the stable merge of the parts by (step, timestamp), parts
taken in logging order. Parts whose step ranges do not overlap need no merging at all, which is
the common case: steps grow as training goes on.

Pure functions over arrays; the SQL lives in ``stores.sql.history``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelyard.domain.history import HistoryColumns
from modelyard.errors import IntegrityFailure

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
POINT_BYTES = 24  # int64 step + int64 timestamp + float64 value


EMPTY = HistoryColumns(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def concat(parts: Sequence[HistoryColumns]) -> HistoryColumns:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return EMPTY
    return HistoryColumns(np.concatenate([p.steps for p in parts]),
                          np.concatenate([p.timestamps for p in parts]),
                          np.concatenate([p.values for p in parts]))


def in_history_order(cols: HistoryColumns) -> HistoryColumns:
    """``cols`` (in logging order) sorted by step, then timestamp; a stable sort, so points
    that share both keep their logging order. Already sorted input is returned as it is."""
    s, t = cols.steps, cols.timestamps
    if len(s) < 2:
        return cols
    # Comparisons, not differences: steps may span the whole int64 range.
    later, same = s[1:] > s[:-1], s[1:] == s[:-1]
    if bool(np.all(later | (same & (t[1:] >= t[:-1])))):
        return cols
    return cols.take(np.lexsort((t, s)))


def pack(cols: HistoryColumns) -> bytes:
    """The bytes of a chunk (``schema.MetricChunkRow.data``)."""
    return b"".join((cols.steps.astype(_I64, copy=False).tobytes(),
                     cols.timestamps.astype(_I64, copy=False).tobytes(),
                     cols.values.astype(_F64, copy=False).tobytes()))


def unpack(data: bytes, n: int) -> HistoryColumns:
    """A chunk's columns (views on ``data``, no copy).

    Raises:
        IntegrityFailure: the stored bytes do not hold ``n`` points.
    """
    if len(data) != n * POINT_BYTES:
        raise IntegrityFailure(
            f"a stored metric chunk holds {len(data)} bytes, not the {n * POINT_BYTES} of its "
            f"{n} points (the database was altered outside modelyard)")
    k = n * 8
    return HistoryColumns(np.frombuffer(data, _I64, n, 0).astype(np.int64, copy=False),
                          np.frombuffer(data, _I64, n, k).astype(np.int64, copy=False),
                          np.frombuffer(data, _F64, n, 2 * k).astype(np.float64, copy=False))


def split(cols: HistoryColumns, size: int) -> list[HistoryColumns]:
    """``cols`` cut into consecutive pieces of at most ``size`` points."""
    return [cols.take(slice(i, i + size)) for i in range(0, len(cols), size)]


@dataclass(frozen=True, slots=True)
class Part:
    """One sorted piece of a history: a chunk (``chunk_id``) or the rows (``chunk_id`` None,
    ``cols`` already read). ``rank`` is its place in logging order."""

    rank: int
    chunk_id: int | None
    n: int
    first_step: int
    last_step: int
    nan_count: int
    cols: HistoryColumns | None = None


def overlap_groups(parts: Sequence[Part]) -> list[list[Part]]:
    """The parts gathered into groups whose step ranges overlap, groups in step order and each
    group's parts in logging order. Every step of a group is below every step of the next one,
    so the history is the groups one after the other, each merged on its own."""
    groups: list[list[Part]] = []
    reach = 0
    for part in sorted(parts, key=lambda p: (p.first_step, p.rank)):
        if groups and part.first_step <= reach:
            groups[-1].append(part)
            reach = max(reach, part.last_step)
        else:
            groups.append([part])
            reach = part.last_step
    for group in groups:
        group.sort(key=lambda p: p.rank)
    return groups


def merge(group: Sequence[HistoryColumns]) -> HistoryColumns:
    """The columns of one overlap group's parts (in logging order) in history order."""
    return group[0] if len(group) == 1 else in_history_order(concat(group))
