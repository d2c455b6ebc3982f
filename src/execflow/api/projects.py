"""`/api/v1/projects`: create and list projects (admins of the default project), and the key
that signs a project's callbacks."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from execflow import admin
from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import (
    ErrorBody,
    ProjectCreate,
    ProjectList,
    ProjectPublic,
    ProjectUpdate,
)
from execflow.callbacks import SIGNATURE_HEADER
from execflow.outbox import callback_secret

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


class CallbackSecretPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    project: str
    secret: str = Field(
        description=f"The HMAC-SHA256 key (its UTF-8 bytes) of `{SIGNATURE_HEADER}`, which is "
        "`sha256=` and the hex digest of the exact request body"
    )


@router.post(
    "",
    status_code=201,
    response_model=ProjectPublic,
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        409: {"model": ErrorBody},
        422: {"model": ErrorBody},
    },
    summary="Create a project (admins of the default project)",
)
async def create_project(
    body: ProjectCreate, response: Response, service: ServiceDep, who: PrincipalDep
) -> ProjectPublic:
    project = await admin.create_project(service, who, body.name, body.actions)
    response.headers["Location"] = f"/api/v1/projects/{project.name}"
    return ProjectPublic.of(project)


@router.get(
    "",
    response_model=ProjectList,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
    summary="List the projects the caller may see (all of them for admins of default)",
)
async def list_projects(service: ServiceDep, who: PrincipalDep) -> ProjectList:
    projects = await admin.list_projects(service, who)
    return ProjectList(items=[ProjectPublic.of(p) for p in projects])


@router.get(
    "/{project}",
    response_model=ProjectPublic,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    summary="Get a project",
)
async def get_project(project: str, service: ServiceDep, who: PrincipalDep) -> ProjectPublic:
    return ProjectPublic.of(await admin.get_project(service, who, project))


@router.patch(
    "/{project}",
    response_model=ProjectPublic,
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
        422: {"model": ErrorBody},
    },
    summary="Change a project's settings: the actions its workflows may use (admins of default)",
)
async def update_project(
    project: str, body: ProjectUpdate, service: ServiceDep, who: PrincipalDep
) -> ProjectPublic:
    return ProjectPublic.of(await admin.update_project(service, who, project, body.actions))


@router.get(
    "/{project}/callback-secret",
    response_model=CallbackSecretPublic,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    summary="The secret that signs the project's callbacks (made on first use; admins only)",
)
async def get_callback_secret(
    project: str, response: Response, service: ServiceDep, who: PrincipalDep
) -> CallbackSecretPublic:
    secret = await callback_secret(service.store, who, project)
    response.headers["Cache-Control"] = "no-store"
    return CallbackSecretPublic(project=project, secret=secret)
