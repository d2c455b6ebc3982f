"""`/api/v1/projects/{project}/tokens`: issue tokens (admins only)."""

from __future__ import annotations

from fastapi import APIRouter

from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import ErrorBody, TokenCreate, TokenPublic

router = APIRouter(prefix="/api/v1/projects", tags=["tokens"])


@router.post(
    "/{project}/tokens",
    status_code=201,
    response_model=TokenPublic,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    summary="Create a token (the project is created if needed)",
)
async def create_token(
    project: str, body: TokenCreate, service: ServiceDep, who: PrincipalDep
) -> TokenPublic:
    token_id, secret = await service.create_token(who, project, body.role, body.description)
    return TokenPublic(id=token_id, project=project, role=body.role, token=secret)
