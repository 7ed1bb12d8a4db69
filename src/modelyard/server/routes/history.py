"""Metric histories: the full or downsampled history as JSON, or the history streamed as CSV or
Arrow (``format=csv|arrow``) with constant memory."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelyard.domain.history import HistoryColumns, parse_history_format
from modelyard.errors import InvalidArgument
from modelyard.server.deps import json, service
from modelyard.server.openapi import BINARY, api_doc
from modelyard.wire import responses as out
from modelyard.wire import routes as r
from modelyard.wire import schemas as w
from modelyard.wire.history_formats import encode_history

router = APIRouter(tags=["runs"])


_EXPORTS = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.arrow.stream": {"schema": BINARY},
}


@router.get(r.METRIC_HISTORY.path, summary="A metric's history (JSON arrays, CSV or Arrow)",
            **api_doc(out.HistoryOut, content=_EXPORTS, errors=(404, 422),
                      ok_description="format=json: parallel arrays; csv, arrow: the history "
                                     "streamed as a download."))
def metric_history(request: Request, run_id: str, key: str, max_points: int | None = None,
                   format: str = "json") -> Response:
    """``format=json`` (default): parallel arrays. ``csv`` / ``arrow``: a streamed download.
    ``max_points``: at most that many points that keep the history's shape."""
    svc = service(request)
    if format == "json":
        if max_points is None:
            return json(w.history_pages_to_json(key, svc.iter_metric_history(run_id, key)))
        return json(w.history_to_json(key, svc.get_metric_history(
            run_id, key, max_points=max_points)))
    try:
        fmt = parse_history_format(format)
    except InvalidArgument:
        raise InvalidArgument(f"format must be json, csv or arrow, not {format!r}",
                              field="format") from None
    if max_points is None:
        pages = svc.iter_metric_history(run_id, key)  # refuses a bad run or key right here
    else:
        pages = iter([HistoryColumns.from_points(
            svc.get_metric_history(run_id, key, max_points=max_points))])
    headers = {"Content-Disposition": f'attachment; filename="metric-history.{fmt.value}"'}
    return StreamingResponse(encode_history(fmt, key, pages), media_type=fmt.media_type,
                             headers=headers)
