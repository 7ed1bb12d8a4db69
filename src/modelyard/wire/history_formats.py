"""A metric history as a byte stream: CSV or Arrow IPC, one page at a time.

The server streams these as HTTP responses and the embedded backend writes them to files, so
both modes produce the very same bytes. pyarrow is imported on first use, not at start-up.

- CSV: a ``step,timestamp,value`` header, then one line per point. Values are written in the
  shortest form that reads back as the same float (``float(text)`` in Python), and NaN and the
  infinities as ``nan``, ``inf`` and ``-inf``.
- Arrow: the IPC *stream* format (``pyarrow.ipc.open_stream``), one record batch per page, with
  the columns ``step`` (int64), ``timestamp`` (int64) and ``value`` (float64; NaN is a NaN, never
  a null), and the metric key in the schema metadata under ``key``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from modelyard.domain.history import HistoryColumns, HistoryFormat

CSV_HEADER = b"step,timestamp,value\n"
# The end-of-stream marker of the Arrow IPC stream format: continuation token, length 0.
_ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _table(pa: Any, page: HistoryColumns) -> Any:
    return pa.record_batch(
        [pa.array(page.steps, type=pa.int64()), pa.array(page.timestamps, type=pa.int64()),
         pa.array(page.values, type=pa.float64())],
        names=["step", "timestamp", "value"],
    )


def encode_history(fmt: HistoryFormat, key: str,
                   pages: Iterable[HistoryColumns]) -> Iterator[bytes]:
    """The bytes of ``pages`` in ``fmt``; holds one page at a time."""
    import pyarrow as pa

    if fmt is HistoryFormat.CSV:
        from pyarrow import csv

        options = csv.WriteOptions(include_header=False)
        yield CSV_HEADER
        for page in pages:
            if len(page):
                sink = pa.BufferOutputStream()
                csv.write_csv(_table(pa, page), sink, write_options=options)
                yield sink.getvalue().to_pybytes()
        return
    schema = pa.schema([("step", pa.int64()), ("timestamp", pa.int64()),
                        ("value", pa.float64())], metadata={"key": key})
    yield schema.serialize().to_pybytes()
    for page in pages:
        if len(page):
            yield _table(pa, page).serialize().to_pybytes()
    yield _ARROW_EOS
