from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from modelyard.server.deps import json, parse_body, read_body, service
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

router = APIRouter(tags=["experiments"])


@router.post(r.CREATE_EXPERIMENT.path, status_code=201)
async def create_experiment(request: Request) -> Response:
    body = await parse_body(request, w.CreateExperimentIn)
    exp = service(request).create_experiment(
        body.name, description=body.description, tags=body.tags
    )
    return json(w.experiment_to_json(exp), 201)


@router.get(r.LIST_EXPERIMENTS.path)
def list_experiments(
    request: Request,
    view: str = "active_only",
    max_results: int = Query(1000),
    page_token: str | None = None,
) -> Response:
    page = service(request).list_experiments(
        view=view, max_results=max_results, page_token=page_token
    )
    return json({"experiments": [w.experiment_to_json(e) for e in page],
                 "next_page_token": page.next_page_token})


@router.get(r.GET_EXPERIMENT_BY_NAME.path)
def get_experiment_by_name(request: Request, name: str) -> Response:
    return json(w.experiment_to_json(service(request).get_experiment_by_name(name)))


@router.get(r.GET_EXPERIMENT.path)
def get_experiment(request: Request, experiment_id: str) -> Response:
    return json(w.experiment_to_json(service(request).get_experiment(experiment_id)))


@router.patch(r.UPDATE_EXPERIMENT.path)
async def update_experiment(request: Request, experiment_id: str) -> Response:
    body = await parse_body(request, w.UpdateExperimentIn)
    exp = service(request).update_experiment(
        experiment_id, name=body.name, description=body.description
    )
    return json(w.experiment_to_json(exp))


@router.delete(r.DELETE_EXPERIMENT.path)
def delete_experiment(request: Request, experiment_id: str) -> Response:
    service(request).delete_experiment(experiment_id)
    return json({})


@router.post(r.RESTORE_EXPERIMENT.path)
async def restore_experiment(request: Request, experiment_id: str) -> Response:
    # The body is optional: {"new_name": ...} restores under another name.
    raw = await read_body(request)
    new_name = w.RestoreExperimentIn.model_validate_json(raw).new_name if raw.strip() else None
    service(request).restore_experiment(experiment_id, new_name=new_name)
    return json({})


@router.post(r.SET_EXPERIMENT_TAG.path)
async def set_experiment_tag(request: Request, experiment_id: str) -> Response:
    body = await parse_body(request, w.KeyValueIn)
    service(request).set_experiment_tag(experiment_id, body.key, body.value)
    return json({})
