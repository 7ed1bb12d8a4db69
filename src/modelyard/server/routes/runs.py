from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from modelyard.errors import InvalidArgument, SchemaViolation
from modelyard.server.deps import json, parse_body, read_body, service
from modelyard.server.openapi import api_doc
from modelyard.wire import responses as out
from modelyard.wire import routes as r
from modelyard.wire import schemas as w
from modelyard.wire.batch import NOT_JSON, parse_log_batch

router = APIRouter(tags=["runs"])


@router.post(r.CREATE_RUN.path, summary="Create a run",
             **api_doc(out.RunOut, status=201, body=w.CreateRunIn, errors=(404, 409)))
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
        run_id=body.run_id,
    )
    return json(w.run_to_json(run), 201)


@router.post(r.SEARCH_RUNS.path, summary="Search runs",
             **api_doc(out.RunPageOut, body=w.SearchRunsIn, errors=(404,)))
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


@router.post(r.COUNT_RUNS.path, summary="Count the runs a search matches",
             **api_doc(out.CountOut, body=w.CountRunsIn, errors=(404,)))
async def count_runs(request: Request) -> Response:
    body = await parse_body(request, w.CountRunsIn)
    count = await run_in_threadpool(
        service(request).count_runs, body.experiment_ids, filter=body.filter, view=body.view
    )
    return json({"count": count})


@router.get(r.GET_RUN.path, summary="Get a run", **api_doc(out.RunOut, errors=(404,)))
def get_run(request: Request, run_id: str) -> Response:
    return json(w.run_to_json(service(request).get_run(run_id)))


@router.patch(r.UPDATE_RUN.path, summary="Update a run's status, end time or name",
              **api_doc(out.RunOut, body=w.UpdateRunIn, errors=(404, 409)))
async def update_run(request: Request, run_id: str) -> Response:
    body = await parse_body(request, w.UpdateRunIn)
    run = await run_in_threadpool(
        service(request).update_run,
        run_id, status=body.status, end_time=body.end_time, run_name=body.run_name,
    )
    return json(w.run_to_json(run))


@router.delete(r.DELETE_RUN.path, summary="Delete a run",
               **api_doc(out.EmptyOut, errors=(404, 409)))
def delete_run(request: Request, run_id: str) -> Response:
    service(request).delete_run(run_id)
    return json({})


@router.post(r.RESTORE_RUN.path, summary="Restore a deleted run",
             **api_doc(out.EmptyOut, errors=(404, 409)))
def restore_run(request: Request, run_id: str) -> Response:
    service(request).restore_run(run_id)
    return json({})


@router.post(r.LOG_BATCH.path, summary="Log metrics, params and tags in one transaction",
             **api_doc(out.BatchOut, body=w.LogBatchIn, errors=(404, 409)))
async def log_batch(request: Request, run_id: str) -> Response:
    raw = await read_body(request)  # too large: a 400, raised before the schema is checked
    try:
        parsed = parse_log_batch(raw)
    except InvalidArgument as exc:
        if exc.message == NOT_JSON:
            raise
        # As on every pydantic-validated route: a body that does not fit the schema is a 422.
        raise SchemaViolation(exc.message, field=exc.field) from None
    stored = await run_in_threadpool(
        service(request).log_batch, run_id, parsed.batch, batch_id=parsed.batch_id,
        create=parsed.create, end=parsed.end,
    )
    return json({"stored": stored, "duplicate": not stored})


@router.delete(r.DELETE_TAG.path, summary="Delete a run tag",
               **api_doc(out.EmptyOut, errors=(404, 409, 422)))
def delete_tag(request: Request, run_id: str, key: str) -> Response:
    service(request).delete_tag(run_id, key)
    return json({})
