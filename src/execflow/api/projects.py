"""`/api/v1/projects/{project}/callback-secret`: the key that signs a project's callbacks."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import ErrorBody
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
