from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from modelyard.errors import InvalidArgument
from modelyard.server.deps import json, parse_body, read_body, request_schema, service
from modelyard.server.errors import error_response
from modelyard.wire import routes as r
from modelyard.wire import schemas as w
from modelyard.wire.batch import NOT_JSON, parse_log_batch

router = APIRouter(tags=["runs"])


@router.post(r.CREATE_RUN.path, status_code=201)
async def create_run(request: Request) -> Response:
    body = await parse_body(request, w.CreateRunIn)
    run = await run_in_threadpool(
        service(request).create_run,
        body.experiment_id,
        run_name=body.run_name,
        user_id=body.user_id,
        start_time=body.start_time,
        tags=body.tags,
        parent_run_id=body.parent_run_id,
    )
    return json(w.run_to_json(run), 201)


@router.post(r.SEARCH_RUNS.path)
async def search_runs(request: Request) -> Response:
    body = await parse_body(request, w.SearchRunsIn)
    page = await run_in_threadpool(
        service(request).search_runs,
        body.experiment_ids,
        filter=body.filter,
        order_by=body.order_by,
        view=body.view,
        max_results=body.max_results,
        page_token=body.page_token,
        include_total=body.include_total,
    )
    answer: dict[str, object] = {"runs": [w.run_to_json(x) for x in page],
                                 "next_page_token": page.next_page_token}
    if page.total is not None:
        answer["total"] = page.total
    return json(answer)


@router.post(r.COUNT_RUNS.path)
async def count_runs(request: Request) -> Response:
    body = await parse_body(request, w.CountRunsIn)
    count = await run_in_threadpool(
        service(request).count_runs, body.experiment_ids, filter=body.filter, view=body.view
    )
    return json({"count": count})


@router.get(r.GET_RUN.path)
def get_run(request: Request, run_id: str) -> Response:
    return json(w.run_to_json(service(request).get_run(run_id)))


@router.patch(r.UPDATE_RUN.path)
async def update_run(request: Request, run_id: str) -> Response:
    body = await parse_body(request, w.UpdateRunIn)
    run = await run_in_threadpool(
        service(request).update_run,
        run_id, status=body.status, end_time=body.end_time, run_name=body.run_name,
    )
    return json(w.run_to_json(run))


@router.delete(r.DELETE_RUN.path)
def delete_run(request: Request, run_id: str) -> Response:
    service(request).delete_run(run_id)
    return json({})


@router.post(r.RESTORE_RUN.path)
def restore_run(request: Request, run_id: str) -> Response:
    service(request).restore_run(run_id)
    return json({})


@router.post(r.LOG_BATCH.path, openapi_extra=request_schema(w.LogBatchIn))
async def log_batch(request: Request, run_id: str) -> Response:
    raw = await read_body(request)  # too large: a 400, raised before the schema is checked
    try:
        batch, batch_id = parse_log_batch(raw)
    except InvalidArgument as exc:
        if exc.message == NOT_JSON:
            raise
        # As on every pydantic-validated route: a body that does not fit the schema is a 422.
        return error_response(422, exc.code, exc.message, exc.field)
    stored = await run_in_threadpool(
        service(request).log_batch, run_id, batch, batch_id=batch_id
    )
    return json({"stored": stored, "duplicate": not stored})


@router.delete(r.DELETE_TAG.path)
def delete_tag(request: Request, run_id: str, key: str) -> Response:
    service(request).delete_tag(run_id, key)
    return json({})
