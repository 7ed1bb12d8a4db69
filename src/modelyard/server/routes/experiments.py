from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from modelyard.server.deps import json, parse_body, read_body, service
from modelyard.server.openapi import api_doc
from modelyard.wire import responses as out
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

router = APIRouter(tags=["experiments"])


@router.post(r.CREATE_EXPERIMENT.path, summary="Create an experiment",
             **api_doc(out.ExperimentOut, status=201, body=w.CreateExperimentIn, errors=(409,)))
async def create_experiment(request: Request) -> Response:
    body = await parse_body(request, w.CreateExperimentIn)
    exp = service(request).create_experiment(
        body.name, description=body.description, tags=body.tags
    )
    return json(w.experiment_to_json(exp), 201)


@router.get(r.LIST_EXPERIMENTS.path, summary="List experiments",
            **api_doc(out.ExperimentPageOut, errors=(422,)))
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


@router.get(r.GET_EXPERIMENT_BY_NAME.path, summary="Look an experiment up by name",
            **api_doc(out.ExperimentOut, errors=(404, 422)))
def get_experiment_by_name(request: Request, name: str) -> Response:
    return json(w.experiment_to_json(service(request).get_experiment_by_name(name)))


@router.get(r.GET_EXPERIMENT.path, summary="Get an experiment",
            **api_doc(out.ExperimentOut, errors=(404,)))
def get_experiment(request: Request, experiment_id: str) -> Response:
    return json(w.experiment_to_json(service(request).get_experiment(experiment_id)))


@router.patch(r.UPDATE_EXPERIMENT.path, summary="Rename or describe an experiment",
              **api_doc(out.ExperimentOut, body=w.UpdateExperimentIn, errors=(404, 409)))
async def update_experiment(request: Request, experiment_id: str) -> Response:
    body = await parse_body(request, w.UpdateExperimentIn)
    exp = service(request).update_experiment(
        experiment_id, name=body.name, description=body.description
    )
    return json(w.experiment_to_json(exp))


@router.delete(r.DELETE_EXPERIMENT.path, summary="Delete an experiment (and its runs)",
               **api_doc(out.EmptyOut, errors=(404, 409)))
def delete_experiment(request: Request, experiment_id: str) -> Response:
    service(request).delete_experiment(experiment_id)
    return json({})


@router.post(r.RESTORE_EXPERIMENT.path, summary="Restore a deleted experiment",
             **api_doc(out.EmptyOut, body=w.RestoreExperimentIn, body_required=False,
                       errors=(404, 409)))
async def restore_experiment(request: Request, experiment_id: str) -> Response:
    # The body is optional: {"new_name": ...} restores under another name.
    raw = await read_body(request)
    new_name = w.RestoreExperimentIn.model_validate_json(raw).new_name if raw.strip() else None
    service(request).restore_experiment(experiment_id, new_name=new_name)
    return json({})


@router.post(r.SET_EXPERIMENT_TAG.path, summary="Set an experiment tag",
             **api_doc(out.EmptyOut, body=w.KeyValueIn, errors=(404, 409)))
async def set_experiment_tag(request: Request, experiment_id: str) -> Response:
    body = await parse_body(request, w.KeyValueIn)
    service(request).set_experiment_tag(experiment_id, body.key, body.value)
    return json({})
