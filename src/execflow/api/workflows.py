"""`/api/v1/workflows`: store, read and delete workflow definitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import (
    ErrorBody,
    RevisionPublic,
    WorkflowApplied,
    WorkflowList,
    WorkflowPublic,
)
from execflow.documents import load_text
from execflow.errors import InvalidInput

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])

_DEFINITION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A workflow definition, as JSON or as YAML (`application/yaml`)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


@router.put(
    "/{name}",
    response_model=WorkflowApplied,
    responses={201: {"model": WorkflowApplied}, **_ERRORS},
    openapi_extra=_DEFINITION_BODY,
    summary="Create a workflow or add a revision",
)
async def put_workflow(
    name: str, request: Request, response: Response, service: ServiceDep, who: PrincipalDep
) -> WorkflowApplied:
    """201 with revision 1 when new; 200 otherwise (an identical definition adds no revision)."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type and "yaml" not in content_type and "yml" not in content_type:
        raise InvalidInput("send the definition as application/json or application/yaml")
    raw = load_text(await request.body(), content_type)
    wf, revision, created = await service.put_workflow(who, name, raw)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return WorkflowApplied(
        name=wf.name,
        description=wf.description,
        revision=revision,
        created_at=wf.created_at,
        updated_at=wf.updated_at,
        created=created,
    )


@router.get("", response_model=WorkflowList, responses=_ERRORS, summary="List workflows")
async def list_workflows(service: ServiceDep, who: PrincipalDep) -> WorkflowList:
    return WorkflowList(items=[WorkflowPublic.of(wf) for wf in await service.list_workflows(who)])


@router.get("/{name}", response_model=RevisionPublic, responses=_ERRORS, summary="Get a workflow")
async def get_workflow(name: str, service: ServiceDep, who: PrincipalDep) -> RevisionPublic:
    """The latest revision with its definition."""
    wf, rev = await service.get_workflow(who, name)
    return RevisionPublic.of(wf, rev)


@router.get(
    "/{name}/revisions/{number}",
    response_model=RevisionPublic,
    responses=_ERRORS,
    summary="Get one revision of a workflow",
)
async def get_revision(
    name: str, number: int, service: ServiceDep, who: PrincipalDep
) -> RevisionPublic:
    wf, rev = await service.get_workflow(who, name, number)
    return RevisionPublic.of(wf, rev)


@router.delete(
    "/{name}",
    status_code=204,
    responses={409: {"model": ErrorBody}, **_ERRORS},
    summary="Delete a workflow (409 while executions are active)",
)
async def delete_workflow(name: str, service: ServiceDep, who: PrincipalDep) -> Response:
    await service.delete_workflow(who, name)
    return Response(status_code=204)
